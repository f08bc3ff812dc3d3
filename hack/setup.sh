#!/usr/bin/env bash
# Installs what berth needs from Debian's packages, only when missing, and
# fetches the microVM guest kernel into berth's data directory (never as a
# host kernel). Idempotent: a second run does nothing but check.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in runc crun busybox-static qemu-system-x86 qemu-utils e2fsprogs iptables iproute2 \
         containernetworking-plugins hyperfine skopeo podman uidmap procps time docker-registry; do
	have "$p" || need+=("$p")
done
if ((${#need[@]})); then
	echo "setup: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v go >/dev/null; then
	if [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; else
		echo "setup: Go is missing: install golang-go (apt-get install golang-go) or Go from go.dev" >&2; exit 1; fi
fi
if [ -x hack/fetch-kernel.sh ]; then
	hack/fetch-kernel.sh "${BERTH_KERNEL_DIR:-/var/lib/berth/kernel}"
fi
