package initramfs

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berthdev/berth/internal/runtime/vm/kmod"
)

// format changes whenever the archive's layout changes, to retire old caches.
const format = "berth-initramfs-1"

// Spec says what goes into an initramfs.
type Spec struct {
	// Agent is the static berth-agent binary, installed as /init.
	Agent string
	// ModulesDir holds the guest kernel's .ko files.
	ModulesDir string
	// Modules are the modules to load at boot; their dependencies are added.
	Modules []string
	// Key is mixed into the cache name (the kernel's identity).
	Key string
}

// ModuleOrderPath is where the module load order lives in the archive; the
// agent reads it at boot (guest.ModuleOrder).
const ModuleOrderPath = "lib/modules/order"

// Build returns the path of an initramfs for spec under cacheDir, writing it
// first unless a cached one with the same inputs exists.
func Build(ctx context.Context, cacheDir string, spec Spec) (string, error) {
	order, err := kmod.Order(spec.ModulesDir, spec.Modules)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", format, spec.Key)
	files := append([]string{spec.Agent}, prefix(spec.ModulesDir, order)...)
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("build initramfs: %w", err)
		}
		fmt.Fprintf(h, "%s %d %d\n", f, st.Size(), st.ModTime().UnixNano())
	}
	path := filepath.Join(cacheDir, "initramfs-"+hex.EncodeToString(h.Sum(nil))[:20]+".cpio")
	if _, err := os.Stat(path); err == nil {
		now := time.Now()
		_ = os.Chtimes(path, now, now) // in use: keep it out of pruneStale's reach
		return path, nil
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("build initramfs: %w", err)
	}
	tmp, err := os.CreateTemp(cacheDir, ".initramfs-*")
	if err != nil {
		return "", fmt.Errorf("build initramfs: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp, spec, order); err != nil {
		tmp.Close()
		return "", fmt.Errorf("build initramfs %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("build initramfs %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("build initramfs %s: %w", path, err)
	}
	pruneStale(cacheDir, path)
	return path, nil
}

// staleAfter is how long an initramfs nobody booted stays in the cache. A
// new agent or kernel makes a new one; without pruning, every rebuild of
// the agent would leave 4 MiB behind.
const staleAfter = time.Hour

// pruneStale removes cached images other than keep that no VM has used for
// staleAfter (Build refreshes an image's mtime on every hit).
func pruneStale(dir, keep string) {
	old, _ := filepath.Glob(filepath.Join(dir, "initramfs-*.cpio"))
	for _, p := range old {
		if st, err := os.Stat(p); err == nil && p != keep && time.Since(st.ModTime()) > staleAfter {
			_ = os.Remove(p)
		}
	}
}

func prefix(dir string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = filepath.Join(dir, n)
	}
	return out
}

func write(f *os.File, spec Spec, order []string) error {
	bw := bufio.NewWriterSize(f, 1<<20)
	w := NewWriter(bw)
	dirs := []string{"dev", "proc", "sys", "lib", "lib/modules", "newroot"}
	for _, d := range dirs {
		if err := w.Add(Entry{Name: d, Mode: fs.ModeDir | 0o755}); err != nil {
			return err
		}
	}
	if err := w.Add(Entry{Name: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Rdev: [2]uint32{5, 1}}); err != nil {
		return err
	}
	agent, err := os.ReadFile(spec.Agent)
	if err != nil {
		return err
	}
	if err := w.Add(Entry{Name: "init", Mode: 0o755, Data: agent}); err != nil {
		return err
	}
	for _, m := range order {
		b, err := os.ReadFile(filepath.Join(spec.ModulesDir, m))
		if err != nil {
			return err
		}
		if err := w.Add(Entry{Name: "lib/modules/" + m, Mode: 0o644, Data: b}); err != nil {
			return err
		}
	}
	if err := w.Add(Entry{Name: ModuleOrderPath, Mode: 0o644, Data: []byte(strings.Join(order, "\n") + "\n")}); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return bw.Flush()
}
