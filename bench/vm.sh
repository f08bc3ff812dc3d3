#!/usr/bin/env bash
# microVM benchmark (issue: microVM). In one run, side by side:
#   floor      bare QEMU (same machine type, accelerator and kernel berth
#              uses) booting a minimal busybox initramfs whose /init powers
#              off at once
#   vm         berth run --rm --vm --network none IMG /bin/true (the floor has
#              no NIC either); vm+net the same on the default network
#   container  berth run --rm --network none IMG /bin/true
# Medians by hyperfine, the VM's ratio to the floor (target <= 1.2x), and
# QEMU's RSS for an idle berth VM against an idle floor guest (target: at
# most 20 MiB above it). Usage: bench/vm.sh [RUNS]  (root; needs
# bin/berth + bin/berth-agent, the kernel set-up fetched, hyperfine).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
BERTH=$PWD/bin/berth
KDIR=${BERTH_KERNEL_DIR:-/var/lib/berth/kernel}
work=$(mktemp -d /tmp/berth-vmbench-XXXXXX)
export BERTH_ROOT=$work/root BERTH_STATE=$work/state BERTH_CONFIG=${BERTH_CONFIG:-/nonexistent}
cleanup() {
	"$BERTH" rm -f idle >/dev/null 2>&1 || true
	[ -n "${fpid:-}" ] && kill -9 "$fpid" 2>/dev/null || true
	"$BERTH" system prune >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/rootfs"/{bin,etc,proc,sys,dev,tmp}
cp /bin/busybox "$work/rootfs/bin/"
for a in true sh sleep poweroff; do ln -s busybox "$work/rootfs/bin/$a"; done
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$BERTH" import "$work/rootfs.tar" bench >/dev/null
"$BERTH" run --rm --vm bench /bin/true 2>/dev/null # build the initramfs, cache the KVM probe

accel=$("$BERTH" info | sed -n 's/^VM Accelerator: \([a-z]*\).*/\1/p')
kernel=$KDIR/vmlinux
[ -f "$kernel" ] || kernel=$KDIR/vmlinuz # what berth boots
khz=$(awk -F: '/cpu MHz/{printf "%d", $2*1000; exit}' /proc/cpuinfo)

# The floor's initramfs: busybox-static and an /init that powers off (or,
# for the memory sample, sleeps).
go build -o "$work/mkinitrd" ./bench/mkinitrd
mkinitrd() { "$work/mkinitrd" "$@"; }
mkinitrd "$work/off.cpio" '/bin/busybox poweroff -f'
mkinitrd "$work/idle.cpio" '/bin/busybox sleep 600'
qemu() { # qemu INITRD
	echo "qemu-system-x86_64 -M microvm -accel $accel -m 256 -nodefaults -no-user-config -display none -no-reboot -serial none" \
		"-kernel $kernel -initrd $1 -append 'console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=$khz'"
}

hyperfine -N --style basic --runs "$RUNS" --warmup 1 --export-json "$work/h.json" \
	-n floor "$(qemu "$work/off.cpio")" \
	-n vm "$BERTH run --rm --vm --network none bench /bin/true" \
	-n vm+net "$BERTH run --rm --vm bench /bin/true" \
	-n container "$BERTH run --rm --network none bench /bin/true" >"$work/hyperfine.out" 2>&1 || { cat "$work/hyperfine.out"; exit 1; }

# Idle memory: QEMU's RSS 3 s after the guest's workload went idle.
eval "$(qemu "$work/idle.cpio") &"
fpid=$!
"$BERTH" run -d --vm --network none --name idle bench sleep 600 >/dev/null 2>&1
sleep 4
# RSS is the issue's metric; PSS splits the guest RAM that QEMU shares
# with virtiofsd (a memfd both map) fairly between them.
rss() { awk '/VmRSS/{printf "%d", $2/1024}' "/proc/$1/status"; }
pss() { awk '/^Pss:/{printf "%d", $2/1024}' "/proc/$1/smaps_rollup"; }
qpid=$("$BERTH" inspect --format '{{.State.Pid}}' idle)
floor_rss=$(rss "$fpid")
vm_rss=$(rss "$qpid")
vm_pss=$(pss "$qpid")
mon_rss=$(pss "$("$BERTH" inspect --format '{{.State.MonitorPid}}' idle)" 2>/dev/null || echo "?")
vfs_rss=$(for p in $(pgrep -x virtiofsd); do grep -q "$BERTH_STATE" "/proc/$p/cmdline" 2>/dev/null && pss "$p"; done | awk '{s+=$1} END {print s+0}')

python3 - "$work/h.json" "$accel" "$floor_rss" "$vm_rss" "$vfs_rss" "$mon_rss" "$RUNS" "$vm_pss" <<'PY'
import json, statistics, sys
h = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
accel, frss, vrss, vfs, mon, runs, vpss = sys.argv[2:]
med = {k: statistics.median(v["times"]) for k, v in h.items()}
print(f"accelerator: {accel}; {runs} runs each; medians (whole command)\n")
print("| what | median | vs floor |")
print("|---|---|---|")
for k in ("floor", "vm", "vm+net", "container"):
    print(f"| {k} | {med[k]*1000:.0f} ms | {med[k]/med['floor']:.2f}x |")
print()
print("| idle memory | RSS |")
print("|---|---|")
print(f"| floor QEMU (busybox init sleeping) | {frss} MiB |")
print(f"| berth VM's QEMU (sleep 600) | {vrss} MiB ({int(vrss)-int(frss):+d} MiB); PSS {vpss} MiB |")
print(f"| + its virtiofsd processes (PSS) | {vfs} MiB |")
print(f"| + its berth monitor (PSS) | {mon} MiB |")
PY
