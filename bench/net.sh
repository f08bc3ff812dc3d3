#!/usr/bin/env bash
# Network benchmark (issue: networks and volumes). In one run, the same
# busybox httpd serving the same file is loaded:
#   direct     on the host, 127.0.0.1:P1
#   published  in a berth container, through -p 127.0.0.1:P2:80 (portmap DNAT)
#   bridge     the container's own address (no DNAT), for reference
# with wrk when installed (Debian: apt-get install wrk), else bench/netbench.
# Prints throughput and latency and the published/direct ratio (target >= 0.8x).
# Usage: bench/net.sh [SECONDS] [CONNECTIONS] [BODY_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-4}
BODY=${3:-16384}
BERTH=${BERTH:-$PWD/bin/berth}
[ -x "$BERTH" ] || CGO_ENABLED=0 go build -o "$BERTH" ./cmd/berth
work=$(mktemp -d /tmp/berth-netbench-XXXXXX)
export BERTH_ROOT=$work/root BERTH_STATE=$work/state BERTH_CONFIG=${BERTH_CONFIG:-/nonexistent}
hostpid=""
cleanup() {
	[ -n "$hostpid" ] && kill "$hostpid" 2>/dev/null || true
	"$BERTH" rm -f netbench-web >/dev/null 2>&1 || true
	"$BERTH" system prune >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/rootfs"/{bin,etc,proc,sys,dev,tmp,www}
cp /bin/busybox "$work/rootfs/bin/"
for a in sh httpd; do ln -s busybox "$work/rootfs/bin/$a"; done
head -c "$BODY" /dev/urandom | base64 -w 0 | head -c "$BODY" >"$work/rootfs/www/index.html"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$BERTH" import "$work/rootfs.tar" netbench >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P1=$(free_port)
P2=$(free_port)
/bin/busybox httpd -f -p "127.0.0.1:$P1" -h "$work/rootfs/www" &
hostpid=$!
"$BERTH" run -d --name netbench-web -p "127.0.0.1:$P2:80" netbench httpd -f -p 80 -h /www >/dev/null
CIP=$("$BERTH" inspect --format '{{(index .NetworkSettings.Networks 0).IPAddress}}' netbench-web)
CIP=${CIP%/*}
for u in "http://127.0.0.1:$P1/" "http://127.0.0.1:$P2/" "http://$CIP/"; do
	for i in $(seq 50); do curl -fso /dev/null "$u" && break; sleep 0.1; done
done

if command -v wrk >/dev/null; then
	tool=wrk
	load() { # URL -> "rps p50_ms p99_ms errors"
		wrk -t 2 -c "$CONNS" -d "${SECS}s" --latency "$1" | python3 -c '
import re, sys
s = sys.stdin.read()
def ms(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", s).group(1))
p50 = ms(re.search(r"50%\s+(\S+)", s).group(1))
p99 = ms(re.search(r"99%\s+(\S+)", s).group(1))
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", s)
errs = sum(map(int, m.groups())) if m else 0
m = re.search(r"Non-2xx or 3xx responses: (\d+)", s)
errs += int(m.group(1)) if m else 0
print(rps, p50, p99, errs)'
	}
else
	tool=netbench
	go build -o "$work/netbench" ./bench/netbench
	load() {
		"$work/netbench" -url "$1" -c "$CONNS" -d "${SECS}s" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(r["rps"], r["p50_ms"], r["p99_ms"], r["errors"])'
	}
fi

read -r d_rps d_p50 d_p99 d_err <<<"$(load "http://127.0.0.1:$P1/")"
read -r p_rps p_p50 p_p99 p_err <<<"$(load "http://127.0.0.1:$P2/")"
read -r b_rps b_p50 b_p99 b_err <<<"$(load "http://$CIP/")"
python3 - "$tool" "$SECS" "$CONNS" "$BODY" "$d_rps" "$d_p50" "$d_p99" "$d_err" "$p_rps" "$p_p50" "$p_p99" "$p_err" "$b_rps" "$b_p50" "$b_p99" "$b_err" <<'PY'
import sys
tool, secs, conns, body = sys.argv[1:5]
v = list(map(float, sys.argv[5:]))
rows = [("host httpd, direct (127.0.0.1)", v[0:4]), ("container, published port (127.0.0.1 -> DNAT)", v[4:8]), ("container, bridge address (no DNAT)", v[8:12])]
print(f"{tool}, {secs} s each, {conns} connections, {body}-byte body (busybox httpd: one fork per request)")
print()
print("| target | req/s | p50 ms | p99 ms | errors | vs direct |")
print("|---|---|---|---|---|---|")
for name, (rps, p50, p99, err) in rows:
    print(f"| {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {err:.0f} | {rps/v[0]:.2f}x |")
print()
print(f"published / direct throughput: {v[4]/v[0]:.2f}x (target >= 0.8x)")
PY
