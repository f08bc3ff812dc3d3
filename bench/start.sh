#!/usr/bin/env bash
# Start-up benchmark (issue: foundation). Measures, side by side in one run:
#   berth run --rm IMG /bin/true            (berth, default runtime)
#   RUNTIME run of a hand-made bundle        (the floor: the same binary berth used)
#   podman run --rm --network none IMG true  (when podman is installed)
# and the resident memory of one idle detached container (monitor + runtime
# leftovers) against podman's conmon. Prints a markdown table with medians
# and ratios. Usage: bench/start.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-30}
BERTH=$PWD/bin/berth
work=$(mktemp -d /tmp/berth-bench-XXXXXX)
export BERTH_ROOT=$work/root BERTH_STATE=$work/state BERTH_CONFIG=${BERTH_CONFIG:-/nonexistent}
cleanup() {
	for i in $(seq 10); do "$BERTH" rm -f "idle$i" >/dev/null 2>&1 || true; done
	command -v podman >/dev/null && for i in $(seq 10); do podman rm -f -t 0 "berth-bench-idle$i" >/dev/null 2>&1 || true; done
	"$BERTH" system prune >/dev/null 2>&1 || true
	[ -n "${RT:-}" ] && $RT delete -f bench-floor >/dev/null 2>&1 || true
	[ -n "${RT:-}" ] && $RT delete -f bench-floor2 >/dev/null 2>&1 || true
	[ -e "$work/mntns" ] && umount "$work/mntns" 2>/dev/null || true
	rm -rf "$work"
	for d in /sys/fs/cgroup/*/berth-bench /sys/fs/cgroup/berth-bench; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
	true
}
trap cleanup EXIT

mkdir -p "$work/rootfs"/{bin,etc,proc,sys,dev,tmp}
cp /bin/busybox "$work/rootfs/bin/"
for a in true sh sleep; do ln -s busybox "$work/rootfs/bin/$a"; done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$BERTH" import "$work/rootfs.tar" bench >/dev/null
"$BERTH" run --rm bench /bin/true   # unpack the layer and cache the runtime probe

RT=$("$BERTH" info | sed -n 's/^Default Runtime: //p')
# The floor runs the very spec berth generates (Docker's defaults, seccomp
# included) on a plain directory, so the ratio is berth's own overhead.
id=$("$BERTH" run -d --network none bench sleep 600)
mkdir -p "$work/bundle" "$work/bundle2"
cp "$BERTH_STATE/containers/$id/bundle/config.json" "$work/bundle/config.json"
"$BERTH" rm -f "$id" >/dev/null
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
p = w + "/bundle/config.json"
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["root"] = {"path": w + "/rootfs", "readonly": False}
c["linux"]["cgroupsPath"] = "/berth-bench/floor"
c["mounts"] = [m for m in c["mounts"] if not m["destination"].startswith("/etc/")]
json.dump(c, open(p, "w"))
# The same without the compiled seccomp filter berth passes to crun
# (run.oci.seccomp_bpf_data): the runtime compiles the profile itself.
c.get("annotations", {}).pop("run.oci.seccomp_bpf_data", None)
c["linux"]["cgroupsPath"] = "/berth-bench/floor2"
json.dump(c, open(w + "/bundle2/config.json", "w"))
PY
floor="$RT run --bundle $work/bundle bench-floor"
if [ "$(basename "$RT")" = crun ] && [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
	# crun refuses hybrid cgroups: like berth, run it where the cgroup2 mount
	# is gone, here a mount namespace made once and entered with nsenter
	# (one exec more than berth's per-call unshare on a thread of its own).
	touch "$work/mntns"
	unshare --mount="$work/mntns" --propagation slave true
	nsenter --mount="$work/mntns" umount /sys/fs/cgroup/unified
	floor="nsenter --mount=$work/mntns $floor"
	RT="nsenter --mount=$work/mntns $RT"
fi
floor2=${floor/"$work/bundle "/"$work/bundle2 "}
floor2=${floor2/bench-floor/bench-floor2}
cmds=("$BERTH run --rm --network none bench /bin/true" "$floor" "$floor2")
names=("berth run --rm" "$(basename "${RT##* }") run (floor: berth's spec)" "$(basename "${RT##* }") run, compiling seccomp")
if command -v podman >/dev/null; then
	podman import "$work/rootfs.tar" localhost/berth-bench >/dev/null 2>&1
	P="podman run --rm --network none --runtime runc --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 localhost/berth-bench /bin/true"
	$P >/dev/null 2>&1
	cmds+=("$P"); names+=("podman run --rm --network none")
fi
for c in "${cmds[@]}"; do $c >/dev/null || { echo "bench: failed: $c" >&2; exit 1; }; done
hyperfine -N -i -w 3 -r "$RUNS" --export-json "$work/h.json" "${cmds[@]}" >/dev/null

# Idle memory: 10 idle detached containers each way; the cost per container
# is the summed PSS of berth's monitors (file pages shared between them are
# split, as the kernel accounts them) against podman's conmons, plus the
# anonymous RSS of one.
N=10
pss() { awk '/^Pss:/ {s+=$2} END {print s+0}' "/proc/$1/smaps_rollup"; }
anon() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status"; }
for i in $(seq $N); do "$BERTH" run -d --network none --name "idle$i" bench sleep 600 >/dev/null; done
sleep 0.5
berth_pss=0; berth_anon=0
for i in $(seq $N); do
	p=$("$BERTH" inspect --format '{{.State.MonitorPid}}' "idle$i")
	berth_pss=$((berth_pss + $(pss "$p"))); berth_anon=$(anon "$p")
done
for i in $(seq $N); do "$BERTH" rm -f "idle$i" >/dev/null; done
conmon_pss=""; conmon_anon=""
if command -v podman >/dev/null; then
	for i in $(seq $N); do podman run -d --name "berth-bench-idle$i" --network none --runtime runc --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 localhost/berth-bench sleep 600 >/dev/null 2>&1 || true; done
	sleep 0.5
	conmon_pss=0
	for p in $(pgrep -f 'conmon.*berth-bench-idle'); do conmon_pss=$((conmon_pss + $(pss "$p"))); conmon_anon=$(anon "$p"); done
	for i in $(seq $N); do podman rm -f -t 0 "berth-bench-idle$i" >/dev/null 2>&1 || true; done
fi
berth_rss="$((berth_pss / N)) $berth_anon"
conmon_rss=""
[ -n "$conmon_pss" ] && conmon_rss="$((conmon_pss / N)) $conmon_anon"

python3 - "$work/h.json" "$berth_rss" "$conmon_rss" "${names[@]}" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
berth_rss, conmon_rss, names = sys.argv[2], sys.argv[3], sys.argv[4:]
med = [r["median"] * 1000 for r in res]
for n, r in zip(names, res):
    bad = [c for c in r.get("exit_codes", []) if c]
    if bad:
        print(f"WARNING: {n}: {len(bad)} of {len(r['exit_codes'])} runs failed (exit codes {sorted(set(bad))})")
print("| command | median ms | berth / this |")
print("|---|---|---|")
for n, m in zip(names, med):
    print(f"| {n} | {m:.1f} | {med[0]/m:.2f}x |")
print()
print(f"berth vs floor: {med[0]/med[1]:.2f}x (target <= 1.3x)")
print(f"berth vs the runtime compiling seccomp itself: {med[0]/med[2]:.2f}x")
if len(med) > 3:
    print(f"podman vs berth: {med[3]/med[0]:.2f}x faster (target >= 4x)")
bp, ba = map(int, berth_rss.split())
line = f"idle detached container (of 10): berth monitor PSS {bp/1024:.1f} MiB (anon RSS {ba/1024:.1f} MiB)"
if conmon_rss:
    cp, ca = map(int, conmon_rss.split())
    line += f"; podman conmon PSS {cp/1024:.1f} MiB (anon RSS {ca/1024:.1f} MiB); ratio {bp/cp:.1f}x"
print(line)
PY
