#!/usr/bin/env bash
# bench/build.sh: `berth build` against `podman build` on the same 10-step
# Dockerfile over the same busybox rootfs, in isolated stores.
#
#   cold:   every step runs (--no-cache on both)
#   cached: a fully cached rebuild
#
# Needs root, busybox-static, podman, hyperfine and python3. Usage:
#   bench/build.sh [path/to/berth]   (default: bin/berth, built if missing)
# RUNS=n sets hyperfine's runs (default 10).
set -euo pipefail

cd "$(dirname "$0")/.."
BERTH=${1:-bin/berth}
RUNS=${RUNS:-10}
if [ ! -x "$BERTH" ]; then
	CGO_ENABLED=0 go build -o bin/berth ./cmd/berth
	BERTH=bin/berth
fi
BERTH=$(readlink -f "$BERTH")
for tool in podman hyperfine python3 /bin/busybox; do
	command -v "$tool" >/dev/null || { echo "bench/build.sh: $tool is required" >&2; exit 1; }
done

W=$(mktemp -d /tmp/berth-bench-build.XXXXXX)
PODMAN=(podman --root "$W/podman/root" --runroot "$W/podman/run" --runtime runc
	--cgroup-manager cgroupfs --events-backend none)
cleanup() {
	"${PODMAN[@]}" system reset -f >/dev/null 2>&1 || true
	BERTH_ROOT=$W/berth/root BERTH_STATE=$W/berth/state "$BERTH" system prune >/dev/null 2>&1 || true
	grep -o "$W[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT

# The base image: busybox-static with its applets and two users.
rootfs=$W/rootfs
mkdir -p "$rootfs"/{bin,etc,dev,proc,sys,tmp,root,home/app}
chmod 1777 "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' >"$rootfs/etc/group"
tar -C "$rootfs" -cf "$W/rootfs.tar" .

# The context: 10 steps after FROM, 5 of them changing files.
ctx=$W/ctx
mkdir -p "$ctx"
head -c 1048576 /dev/urandom >"$ctx/blob.bin"
echo a >"$ctx/a.txt"
cat >"$ctx/Dockerfile" <<'EOF'
FROM localhost/bench-busybox
ENV APP=/app
WORKDIR /app
COPY a.txt blob.bin /app/
RUN echo one > /app/one
RUN echo two > /app/two && cat /app/a.txt
LABEL bench=yes
RUN mkdir -p /app/data && echo three > /app/data/three
RUN rm /app/one
USER app
CMD ["cat", "/app/two"]
EOF

export BERTH_ROOT=$W/berth/root BERTH_STATE=$W/berth/state BERTH_CONFIG=/nonexistent
"$BERTH" import "$W/rootfs.tar" localhost/bench-busybox >/dev/null
"${PODMAN[@]}" import "$W/rootfs.tar" localhost/bench-busybox >/dev/null 2>&1
PB="${PODMAN[*]} build --network none --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 -q -t bench $ctx"
BB="$BERTH build -q -t bench $ctx"
# Warm both (runtime probe, base layer unpack) and check the images run.
$BB >/dev/null && $PB >/dev/null
[ "$("$BERTH" run --rm bench)" = two ] || { echo "berth-built image does not run" >&2; exit 1; }

hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$W/cold.json" \
	-n "berth cold" "$BB --no-cache" -n "podman cold" "$PB --no-cache"
hyperfine -N --runs "$RUNS" --warmup 2 --export-json "$W/cached.json" \
	-n "berth cached" "$BB" -n "podman cached" "$PB"

python3 - "$W/cold.json" "$W/cached.json" <<'EOF'
import json, sys
for path in sys.argv[1:]:
    res = {r["command"]: r["median"] for r in json.load(open(path))["results"]}
    (bn, b), (pn, p) = sorted(res.items())
    print(f"{bn:14s} median {b*1000:8.1f} ms")
    print(f"{pn:14s} median {p*1000:8.1f} ms")
    print(f"  podman/berth = {p/b:.1f}x")
EOF
