#!/usr/bin/env bash
# Network benchmark (issue: networks and volumes). The same busybox httpd
# serving the same file is loaded, in one run:
#   direct     on the host                      HOSTADDR:P1
#   published  in a berth container, -p P2:80   HOSTADDR:P2 (portmap DNAT)
# by bench/netbench (keep-alive Go clients; busybox httpd closes after each
# response, so every request is a new connection and a fork). The client
# runs in a berth container on the default bridge, i.e. in a network
# namespace of its own, as a remote client would: the ratio is the cost of
# the published path. A second pair of rows loads 127.0.0.1 from the host
# itself; there, with net.ipv4.tcp_tw_reuse=2 (loopback reuse, Linux's
# default) the client reuses TIME_WAIT ports that the container's
# namespace still holds, and some SYNs wait a second for a retransmit: a
# property of DNAT from loopback (Docker's userland proxy avoids it by
# terminating TCP), reported for information.
# Each client has its own published container: two clients masqueraded to
# one source address would collide on TIME_WAIT tuples in one namespace
# (the classic PAWS-behind-NAT stall) and measure that instead.
# With a guest kernel installed (VM=0 skips it), the same httpd also runs in
# a berth microVM (--vm -p P4:80) and the client-namespace rows gain
# "microVM, published port" and "microVM, its IP" (over the bridge, no
# DNAT). The VM runs under TCG on hosts without usable KVM: those rows
# measure the emulator far more than the network path.
# Targets alternate for ROUNDS rounds; medians are reported and the ratio is
# the median of each round's published/direct, so a neighbour's burst of CPU
# does not land on one target only.
# Usage: bench/net.sh [SECONDS_PER_RUN] [ROUNDS] [CONNECTIONS] [BODY_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-3}
ROUNDS=${2:-4}
CONNS=${3:-4}
BODY=${4:-16384}
BERTH=${BERTH:-$PWD/bin/berth}
VM=${VM:-1}
[ -e "${BERTH_KERNEL_DIR:-/var/lib/berth/kernel}/vmlinuz" ] && [ -x "$(dirname "$BERTH")/berth-agent" ] || VM=0
[ -x "$BERTH" ] || CGO_ENABLED=0 go build -o "$BERTH" ./cmd/berth
work=$(mktemp -d /tmp/berth-netbench-XXXXXX)
export BERTH_ROOT=$work/root BERTH_STATE=$work/state BERTH_CONFIG=${BERTH_CONFIG:-/nonexistent}
hostpid=""
cleanup() {
	[ -n "$hostpid" ] && kill "$hostpid" 2>/dev/null || true
	"$BERTH" rm -f netbench-web netbench-web-lo netbench-client netbench-vm >/dev/null 2>&1 || true
	"$BERTH" system prune >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/rootfs"/{bin,etc,proc,sys,dev,tmp,www} "$work/tools"
cp /bin/busybox "$work/rootfs/bin/"
for a in sh httpd sleep; do ln -s busybox "$work/rootfs/bin/$a"; done
head -c "$BODY" /dev/urandom | base64 -w 0 | head -c "$BODY" >"$work/rootfs/www/index.html"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$BERTH" import "$work/rootfs.tar" netbench >/dev/null
CGO_ENABLED=0 go build -o "$work/tools/netbench" ./bench/netbench

HOSTADDR=$(ip -4 -o route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
[ -n "$HOSTADDR" ] || HOSTADDR=$(hostname -I | awk '{print $1}')
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0",0)); print(s.getsockname()[1])'; }
P1=$(free_port)
P2=$(free_port)
P3=$(free_port)
P4=$(free_port)
/bin/busybox httpd -f -p "0.0.0.0:$P1" -h "$work/rootfs/www" &
hostpid=$!
"$BERTH" run -d --name netbench-web -p "$P2:80" netbench httpd -f -p 80 -h /www >/dev/null
"$BERTH" run -d --name netbench-web-lo -p "$P3:80" netbench httpd -f -p 80 -h /www >/dev/null
VMIP=""
if [ "$VM" = 1 ]; then
	"$BERTH" run -d --vm --name netbench-vm -p "$P4:80" netbench httpd -f -p 80 -h /www >/dev/null 2>&1
	VMIP=$("$BERTH" inspect --format '{{(index .NetworkSettings.Networks 0).IPAddress}}' netbench-vm | cut -d/ -f1)
fi
# One client namespace for the whole run, like one remote host.
"$BERTH" run -d --name netbench-client -v "$work/tools:/tools:ro" netbench sleep 100000 >/dev/null
for u in "http://$HOSTADDR:$P1/" "http://$HOSTADDR:$P2/" "http://127.0.0.1:$P3/" ${VMIP:+"http://$HOSTADDR:$P4/"}; do
	for i in $(seq 50); do curl -fso /dev/null "$u" && break; sleep 0.1; done
done

# load WHERE URL -> "rps p50_ms p99_ms errors"
load() {
	local out
	if [ "$1" = container ]; then
		out=$("$BERTH" exec netbench-client /tools/netbench -url "$2" -c "$CONNS" -d "${SECS}s")
	else
		out=$("$work/tools/netbench" -url "$2" -c "$CONNS" -d "${SECS}s")
	fi
	python3 -c 'import json, sys; r = json.loads(sys.argv[1]); print(r["rps"], r["p50_ms"], r["p99_ms"], r["errors"])' "$out"
}

: >"$work/results"
for r in $(seq "$ROUNDS"); do
	order="direct published"
	[ $((r % 2)) = 0 ] && order="published direct"
	for t in $order; do
		port=$P1 lport=$P1
		[ "$t" = published ] && port=$P2 lport=$P3
		echo "client-ns-$t $r $(load container "http://$HOSTADDR:$port/")" >>"$work/results"
		echo "loopback-$t $r $(load host "http://127.0.0.1:$lport/")" >>"$work/results"
	done
	if [ -n "$VMIP" ]; then
		echo "client-ns-vm-published $r $(load container "http://$HOSTADDR:$P4/")" >>"$work/results"
		echo "client-ns-vm-ip $r $(load container "http://$VMIP:80/")" >>"$work/results"
	fi
done
python3 - "$SECS" "$ROUNDS" "$CONNS" "$BODY" "$HOSTADDR" "$work/results" <<'PY'
import statistics, sys
secs, rounds, conns, body, addr, path = sys.argv[1:7]
res, by_round = {}, {}
for line in open(path):
    k, r, *v = line.split()
    res.setdefault(k, []).append(list(map(float, v)))
    by_round.setdefault(r, {})[k] = float(v[0])
med = {k: [statistics.median(col) for col in zip(*v)] for k, v in res.items()}
errs = {k: sum(r[3] for r in v) for k, v in res.items()}
def ratio(prefix):
    rs = sorted(x[prefix + "published"] / x[prefix + "direct"] for x in by_round.values())
    return statistics.median(rs), rs
print(f"bench/netbench: {rounds} rounds x {secs} s per run, {conns} connections, {body}-byte body; medians")
print()
print("| client | target | req/s | p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|---|")
for prefix, client in (("client-ns-", "own netns (a berth container)"), ("loopback-", "host, 127.0.0.1")):
    for t, name in (("direct", "host httpd"), ("published", "container, published port")):
        rps, p50, p99, _ = med[prefix + t]
        print(f"| {client} | {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errs[prefix + t]:.0f} |")
    for t, name in (("vm-published", "microVM (TCG), published port"), ("vm-ip", "microVM (TCG), its IP")):
        if prefix + t in med:
            rps, p50, p99, _ = med[prefix + t]
            print(f"| {client} | {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errs[prefix + t]:.0f} |")
print()
m, rs = ratio("client-ns-")
print(f"published / direct throughput, client in its own netns -> {addr}: {m:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in rs)}; target >= 0.8x)")
if "client-ns-vm-published" in med:
    for other, what in (("direct", "the host's httpd"), ("vm-ip", "the VM's IP")):
        rs = sorted(x["client-ns-vm-published"] / x["client-ns-" + other] for x in by_round.values())
        print(f"microVM published / {what}, client in its own netns: {statistics.median(rs):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in rs)})")
m, rs = ratio("loopback-")
print(f"published / direct throughput, client on the host's loopback: {m:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in rs)})")
PY
