package kmod

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// kernelModules is where hack/fetch-kernel.sh put the guest kernel for tests.
func kernelModules(t *testing.T) string {
	dir := os.Getenv("BERTH_KERNEL_DIR")
	if dir == "" {
		dir = "/var/lib/berth-kernel-cache"
	}
	dir = filepath.Join(dir, "modules")
	if _, err := os.Stat(filepath.Join(dir, "virtio.ko")); err != nil {
		t.Skipf("no guest kernel modules in %s (run hack/fetch-kernel.sh): %v", dir, err)
	}
	return dir
}

func TestOrderRealModules(t *testing.T) {
	dir := kernelModules(t)
	got, err := Order(dir, []string{"virtio_mmio", "virtio_console", "virtiofs", "virtio_net", "ext4"})
	if err != nil {
		t.Fatal(err)
	}
	before := func(a, b string) {
		t.Helper()
		i, j := slices.Index(got, a+".ko"), slices.Index(got, b+".ko")
		if i < 0 || j < 0 || i > j {
			t.Errorf("%s must load before %s: %v", a, b, got)
		}
	}
	before("virtio_ring", "virtio")
	before("virtio", "virtio_mmio")
	before("fuse", "virtiofs")
	before("failover", "net_failover")
	before("net_failover", "virtio_net")
	if slices.Contains(got, "ext4.ko") {
		t.Errorf("ext4 is built in, yet listed: %v", got)
	}
	if n := len(got); n != len(slices.Compact(slices.Clone(got))) {
		t.Errorf("duplicates in %v", got)
	}
}

func TestOrderMissingDependency(t *testing.T) {
	src := kernelModules(t)
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(src, "virtio_mmio.ko"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "virtio_mmio.ko"), b, 0o644)
	if _, err := Order(dir, []string{"virtio_mmio"}); err == nil {
		t.Fatal("no error for a module whose dependencies are missing")
	}
}
