package initramfs

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPruneStale(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "initramfs-new.cpio")
	stale := filepath.Join(dir, "initramfs-old.cpio")
	fresh := filepath.Join(dir, "initramfs-recent.cpio")
	other := filepath.Join(dir, "accel-1234")
	for _, p := range []string{keep, stale, fresh, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleAfter)
	for _, p := range []string{keep, stale, other} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	pruneStale(dir, keep)
	for p, want := range map[string]bool{keep: true, stale: false, fresh: true, other: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(p), err == nil, want)
		}
	}
}
