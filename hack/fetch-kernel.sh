#!/usr/bin/env bash
# fetch-kernel.sh DESTDIR: place Debian's cloud kernel and the modules berth's
# microVMs need under DESTDIR, without installing a kernel on the host.
#
#   DESTDIR/vmlinuz        the kernel image
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

mkdir -p "$dest"
rm -rf "$dest/modules.new"
mv "$stage/modules" "$dest/modules.new"
cp "$stage/vmlinuz" "$dest/vmlinuz.new"
rm -rf "$dest/modules"
mv "$dest/modules.new" "$dest/modules"
mv "$dest/vmlinuz.new" "$dest/vmlinuz"
mv "$stage/version" "$dest/version"
echo "fetch-kernel: $ver into $dest ($(ls "$dest/modules" | wc -l) modules)"
