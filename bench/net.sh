#!/usr/bin/env bash
# Network benchmark (issue: networks and volumes). In one run, the same
# busybox httpd serving the same file is loaded:
#   direct     on the host, 127.0.0.1:P1
#   published  in a berth container, through -p 127.0.0.1:P2:80 (portmap DNAT)
#   bridge     a second container's own address (no DNAT), for reference
#              (a second one: connections to one namespace through DNAT and
#              directly would share TIME_WAIT tuples and stall on SYNs)
# with wrk when installed (Debian: apt-get install wrk), else bench/netbench.
# Prints throughput and latency and the published/direct ratio (target >= 0.8x).
# The targets are loaded in turn for ROUNDS rounds (the order alternating)
# and medians are reported, the ratio as the median of each round's
# published/direct, so a neighbour's burst of CPU does not land on one
# target only.
# Usage: bench/net.sh [SECONDS_PER_ROUND] [ROUNDS] [CONNECTIONS] [BODY_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-3}
ROUNDS=${2:-6}
CONNS=${3:-4}
BODY=${4:-16384}
BERTH=${BERTH:-$PWD/bin/berth}
[ -x "$BERTH" ] || CGO_ENABLED=0 go build -o "$BERTH" ./cmd/berth
work=$(mktemp -d /tmp/berth-netbench-XXXXXX)
export BERTH_ROOT=$work/root BERTH_STATE=$work/state BERTH_CONFIG=${BERTH_CONFIG:-/nonexistent}
hostpid=""
cleanup() {
	[ -n "$hostpid" ] && kill "$hostpid" 2>/dev/null || true
	"$BERTH" rm -f netbench-web netbench-bridge >/dev/null 2>&1 || true
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
"$BERTH" run -d --name netbench-bridge netbench httpd -f -p 80 -h /www >/dev/null
CIP=$("$BERTH" inspect --format '{{(index .NetworkSettings.Networks 0).IPAddress}}' netbench-bridge)
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

: >"$work/results"
for r in $(seq "$ROUNDS"); do
	order="direct published bridge"
	[ $((r % 2)) = 0 ] && order="bridge published direct"
	for t in $order; do
		case $t in
		direct) u="http://127.0.0.1:$P1/" ;;
		published) u="http://127.0.0.1:$P2/" ;;
		bridge) u="http://$CIP/" ;;
		esac
		echo "$t $r $(load "$u")" >>"$work/results"
	done
done
python3 - "$tool" "$SECS" "$ROUNDS" "$CONNS" "$BODY" "$work/results" <<'PY'
import statistics, sys
tool, secs, rounds, conns, body, path = sys.argv[1:7]
res, by_round = {}, {}
for line in open(path):
    k, r, *v = line.split()
    res.setdefault(k, []).append(list(map(float, v)))
    by_round.setdefault(r, {})[k] = float(v[0])
med = {k: [statistics.median(col) for col in zip(*v)] for k, v in res.items()}
errs = {k: sum(r[3] for r in v) for k, v in res.items()}
names = {"direct": "host httpd, direct (127.0.0.1)", "published": "container, published port (127.0.0.1 -> DNAT)", "bridge": "container, bridge address (no DNAT)"}
d = med["direct"][0]
print(f"{tool}: {rounds} rounds x {secs} s per target, {conns} connections, {body}-byte body; medians (busybox httpd forks per request)")
print()
print("| target | req/s | p50 ms | p99 ms | errors | vs direct |")
print("|---|---|---|---|---|---|")
for k in ("direct", "published", "bridge"):
    rps, p50, p99, _ = med[k]
    print(f"| {names[k]} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errs[k]:.0f} | {rps/d:.2f}x |")
print()
ratios = sorted(x["published"] / x["direct"] for x in by_round.values())
print(f"published / direct throughput: {statistics.median(ratios):.2f}x, median of the rounds' ratios {', '.join(f'{x:.2f}' for x in ratios)} (target >= 0.8x)")
PY
