// Package vmtest holds what the VM backend's tests (in several packages)
// need to decide whether this host can boot berth microVMs.
package vmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RequireVM skips t unless VMs can be booted here: root, the guest kernel
// in kernelDir (vm.KernelDir), virtiofsd, busybox-static and QEMU.
func RequireVM(t testing.TB, kernelDir string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots VMs; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, p := range []string{filepath.Join(kernelDir, "vmlinuz"), "/usr/lib/qemu/virtiofsd", "/bin/busybox"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs %s (hack/fetch-kernel.sh, qemu-system-common, busybox-static): %v", p, err)
		}
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("needs qemu-system-x86_64 (Debian package qemu-system-x86)")
	}
}
