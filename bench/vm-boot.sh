#!/usr/bin/env bash
# vm-boot.sh: microVM boot numbers for berth's vm backend.
#
#   floor    QEMU + guest kernel + berth's initramfs, agent in probe mode
#            (loads its modules, finds its port, powers off): launch→exit
#   true     berth-vm create + start + exit + delete of /bin/true, wall time
#   rss      QEMU's RSS with an idle guest (sleep), 2 s after start
#
# Usage: bench/vm-boot.sh [RUNS]   (root; BERTH_KERNEL_DIR, default
# /var/lib/berth-kernel-cache, filled by hack/fetch-kernel.sh)
set -euo pipefail
runs=${1:-5}
kdir=${BERTH_KERNEL_DIR:-/var/lib/berth-kernel-cache}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/bvmbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cache="$work/cache" root="$work/run"

(cd "$top" && go build -o "$work/bin/berth-vm" ./cmd/berth-vm && CGO_ENABLED=0 go build -o "$work/bin/berth-agent" ./cmd/berth-agent)
bvm() { "$work/bin/berth-vm" --root "$root" --kernel-dir "$kdir" --cache-dir "$cache" "$@"; }

mkdir -p "$work/bundle/rootfs"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$work/bundle/rootfs/bin/"
for a in sh true sleep; do ln -s busybox "$work/bundle/rootfs/bin/$a"; done
bundle() { printf '{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":%s,"env":["PATH=/bin"],"cwd":"/"}}' "$1" >"$work/bundle/config.json"; }

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f", m}'; }

# run1 ID: create, start, wait until stopped, delete; prints seconds.
run1() {
	local t0; t0=$(now)
	bvm create --bundle "$work/bundle" "$1" </dev/null >/dev/null 2>&1
	bvm start "$1"
	until bvm state "$1" | grep -q '"stopped"'; do sleep 0.01; done
	bvm delete "$1"
	echo "$(now) - $t0" | bc
}

bundle '["true"]'
run1 warm >/dev/null # builds the initramfs, probes KVM once
accel=$(awk '{print $1}' "$cache"/accel-* 2>/dev/null || echo tcg)
initrd=$(ls -t "$cache"/initramfs-*.cpio | head -n1)
kernel="$kdir/vmlinux"; [ -f "$kernel" ] || kernel="$kdir/vmlinuz" # what the backend boots
khz=$(awk -F: '/cpu MHz/{printf "%d", $2*1000; exit}' /proc/cpuinfo)

floor=$(for i in $(seq "$runs"); do
	t0=$(now)
	timeout 30 qemu-system-x86_64 -M microvm -accel "$accel" -m 256 -nodefaults -no-user-config -display none -no-reboot \
		-serial none -kernel "$kernel" -initrd "$initrd" \
		-append "console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=$khz berth.probe" \
		-device virtio-serial-device,id=vs0 -chardev socket,id=a,path="$work/probe.sock",server=on,wait=off \
		-device virtserialport,chardev=a,name=org.berth.agent,bus=vs0.0 -global virtio-mmio.force-legacy=false
	echo "$(now) - $t0" | bc
done | median)

true_s=$(for i in $(seq "$runs"); do run1 "true$i"; done | median)

bundle '["sleep","30"]'
bvm create --bundle "$work/bundle" idle </dev/null >/dev/null 2>&1
bvm start idle
sleep 2
qpid=$(pgrep -f -- "-name berth-idle " | head -n1)
rss=$(awk '/VmRSS/{printf "%d", $2/1024}' "/proc/$qpid/status")
bvm kill idle KILL
until bvm state idle | grep -q '"stopped"'; do sleep 0.05; done
bvm delete idle

echo "accel=$accel kernel=$(basename "$kernel") runs=$runs (medians)"
echo "floor (QEMU+kernel+initramfs, agent probe, poweroff): ${floor} s"
echo "berth-vm create+start+exit+delete of /bin/true:       ${true_s} s"
echo "QEMU RSS, idle guest (-m 256):                         ${rss} MiB"
