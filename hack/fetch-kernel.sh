#!/usr/bin/env bash
# fetch-kernel.sh DESTDIR: place Debian's cloud kernel and the modules berth's
# microVMs need under DESTDIR, without installing a kernel on the host.
#
#   DESTDIR/vmlinuz        the kernel image
#   DESTDIR/vmlinux        the same, uncompressed (when lz4/unlz4 is there): QEMU
#                          boots it through PVH, ~0.5 s faster under TCG
#   DESTDIR/modules/*.ko   virtio transports and devices, fuse/virtiofs, overlay, ext4
#   DESTDIR/version        the kernel release (e.g. 6.1.0-56-cloud-amd64)
#
# Idempotent: when DESTDIR/version names the release that
# linux-image-cloud-amd64 currently depends on, nothing is downloaded.
# Needs: apt-get, apt-cache, dpkg-deb (Debian), access to a Debian mirror.
set -euo pipefail

dest=${1:?usage: fetch-kernel.sh DESTDIR}
meta=linux-image-cloud-amd64

depends() { apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1; }

pkg=$(depends || true)
if [ -z "$pkg" ]; then
	apt-get update -qq >/dev/null
	pkg=$(depends || true)
fi
[ -n "$pkg" ] || { echo "fetch-kernel: cannot resolve the package $meta depends on" >&2; exit 1; }
ver=${pkg#linux-image-}
# Signed images are named linux-image-VER-cloud-amd64 as well; the release is VER-cloud-amd64 either way.

if [ -f "$dest/version" ] && [ "$(cat "$dest/version")" = "$ver" ] && [ -f "$dest/vmlinuz" ] && [ -d "$dest/modules" ]; then
	echo "fetch-kernel: $ver already in $dest"
	exit 0
fi

tmp=$(mktemp -d)
chmod 755 "$tmp"; chown _apt "$tmp" 2>/dev/null || true # apt-get download runs as _apt
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq "$pkg")
dpkg-deb -x "$tmp"/*.deb "$tmp/x"

moddir="$tmp/x/lib/modules/$ver"
[ -d "$moddir" ] || moddir=$(find "$tmp/x" -maxdepth 3 -type d -path '*/lib/modules/*' | head -n1)
[ -d "$moddir" ] || { echo "fetch-kernel: no modules directory in $pkg" >&2; exit 1; }
kernel=$(find "$tmp/x/boot" -name 'vmlinuz-*' | head -n1)
[ -n "$kernel" ] || { echo "fetch-kernel: no vmlinuz in $pkg" >&2; exit 1; }

# The guest needs these; their dependencies (depends= in .modinfo) are
# resolved by berth at boot, so list them all here as well.
wanted="virtio_ring virtio virtio_mmio virtio_pci virtio_pci_modern_dev virtio_pci_legacy_dev
virtio_blk virtio_console virtio_net failover net_failover fuse virtiofs overlay
ext4 jbd2 mbcache crc16 crc32c_generic crc32c_intel libcrc32c"

stage="$tmp/stage"
mkdir -p "$stage/modules"
for m in $wanted; do
	f=$(find "$moddir" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -n1)
	[ -n "$f" ] || continue # built in, or not shipped in this flavour
	case "$f" in
	*.ko.xz) xz -dc "$f" >"$stage/modules/$m.ko" ;;
	*.ko.zst) zstd -qdc "$f" >"$stage/modules/$m.ko" ;;
	*) cp "$f" "$stage/modules/$m.ko" ;;
	esac
done
cp "$kernel" "$stage/vmlinuz"
echo "$ver" >"$stage/version"

# extract_vmlinux VMLINUZ OUT: find the compressed payload (Debian's cloud
# kernel uses LZ4) and unpack it; keep it only if it is an ELF file.
extract_vmlinux() {
	local magic tool pos
	for pair in $'\x02\x21\x4c\x18:unlz4 -c' $'\x28\xb5\x2f\xfd:zstd -dqc' $'\xfd7zXZ\x00:xz -dc' $'\x1f\x8b\x08:gzip -dc'; do
		magic=${pair%%:*} tool=${pair#*:}
		command -v "${tool%% *}" >/dev/null || continue
		for pos in $(LC_ALL=C grep -abo "$magic" "$1" 2>/dev/null | cut -d: -f1 | head -n 5); do
			tail -c +$((pos + 1)) "$1" | $tool >"$2" 2>/dev/null || true
			if [ "$(head -c 4 "$2" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
				return 0
			fi
		done
	done
	rm -f "$2"
	return 1
}
extract_vmlinux "$stage/vmlinuz" "$stage/vmlinux" || echo "fetch-kernel: no uncompressed vmlinux (install lz4 for faster boots)" >&2

mkdir -p "$dest"
rm -rf "$dest/modules.new"
mv "$stage/modules" "$dest/modules.new"
cp "$stage/vmlinuz" "$dest/vmlinuz.new"
rm -rf "$dest/modules"
mv "$dest/modules.new" "$dest/modules"
mv "$dest/vmlinuz.new" "$dest/vmlinuz"
if [ -f "$stage/vmlinux" ]; then mv "$stage/vmlinux" "$dest/vmlinux"; else rm -f "$dest/vmlinux"; fi
mv "$stage/version" "$dest/version"
echo "fetch-kernel: $ver into $dest ($(ls "$dest/modules" | wc -l) modules)"
