#!/usr/bin/env bash
# The demo: build a sample image offline from Debian's busybox-static, then
# run it as a container (and as a microVM when the VM backend is set up).
set -euo pipefail
cd "$(dirname "$0")/.."
BERTH=${BERTH:-$PWD/bin/berth}
export BERTH_ROOT=${BERTH_ROOT:-/var/lib/berth} BERTH_STATE=${BERTH_STATE:-/run/berth}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== building the sample image from /bin/busybox (offline)"
mkdir -p "$work/rootfs"/{bin,etc,tmp,proc,sys,dev,root}
cp /bin/busybox "$work/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$work/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$work/rootfs/etc/passwd"
printf 'root:x:0:\n' > "$work/rootfs/etc/group"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$BERTH" import "$work/rootfs.tar" berth-demo:latest
"$BERTH" images berth-demo

echo "== berth run --rm berth-demo (container)"
"$BERTH" run --rm --hostname demo berth-demo sh -c 'echo "hello from a $(uname -s) container on kernel $(uname -r), hostname $(hostname)"'
echo "== host kernel: $(uname -r)"

echo "== images travel: embedded registry on loopback, push, remove, pull back, run"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BERTH" registry serve --addr "127.0.0.1:$port" --root "$work/registry" >"$work/registry.log" 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null; wait $regpid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do grep -q serving "$work/registry.log" && break; sleep 0.1; done
ref="127.0.0.1:$port/demo/berth-demo:latest"
"$BERTH" tag berth-demo "$ref"
"$BERTH" push "$ref"
"$BERTH" rmi "$ref" berth-demo
"$BERTH" pull "$ref"
"$BERTH" tag "$ref" berth-demo
"$BERTH" run --rm berth-demo echo "pulled back from the registry and ran"
if "$BERTH" info | grep -Eq '^VM Accelerator: (kvm|tcg)'; then
	echo "== berth run --rm --vm berth-demo (microVM)"
	"$BERTH" run --rm --vm --hostname demo berth-demo sh -c 'echo "hello from a microVM on guest kernel $(uname -r)"'
else
	echo "== microVM isolation is not set up on this host (see berth info)"
fi
