package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestModeAt(t *testing.T) {
	tests := []struct {
		mounts map[string]int64
		want   Mode
	}{
		{map[string]int64{"/r": unix.CGROUP2_SUPER_MAGIC}, V2},
		{map[string]int64{"/r": unix.TMPFS_MAGIC, "/r/unified": unix.CGROUP2_SUPER_MAGIC, "/r/memory": unix.CGROUP_SUPER_MAGIC}, Hybrid},
		{map[string]int64{"/r": unix.TMPFS_MAGIC, "/r/memory": unix.CGROUP_SUPER_MAGIC}, V1},
		{map[string]int64{"/r": unix.TMPFS_MAGIC}, Unavailable},
		{map[string]int64{}, Unavailable},
	}
	for _, tt := range tests {
		got := modeAt("/r", func(p string) (int64, error) {
			m, ok := tt.mounts[p]
			if !ok {
				return 0, os.ErrNotExist
			}
			return m, nil
		})
		if got != tt.want {
			t.Errorf("%v: mode %v, want %v", tt.mounts, got, tt.want)
		}
	}
}

func TestStatsV1(t *testing.T) {
	root := writeTree(t, map[string]string{
		"cpuacct/berth/c1/cpuacct.usage":         "123456789\n",
		"memory/berth/c1/memory.usage_in_bytes":  "4096000\n",
		"memory/berth/c1/memory.limit_in_bytes":  "67108864\n",
		"pids/berth/c1/pids.current":             "3\n",
		"pids/berth/c1/pids.max":                 "max\n",
		"pids/berth/c1/cgroup.procs":             "10\n11\n12\n",
		"memory/berth/c2/memory.usage_in_bytes":  "1\n",
		"memory/berth/c2/memory.limit_in_bytes":  "9223372036854771712\n",
		"memory/berth/bad/memory.usage_in_bytes": "lots\n",
	})
	for _, mode := range []Mode{V1, Hybrid} {
		h := Hierarchy{Root: root, Mode: mode}
		st, err := h.Stats("/berth/c1")
		if err != nil {
			t.Fatal(err)
		}
		want := Stats{CPUUsage: 123456789, MemoryUsage: 4096000, MemoryLimit: 64 << 20, Pids: 3}
		if st != want {
			t.Errorf("%v: stats %+v, want %+v", mode, st, want)
		}
		// The path may come without its leading slash, as in some specs.
		if st2, err := h.Stats("berth/c1"); err != nil || st2 != st {
			t.Errorf("relative path: %+v %v", st2, err)
		}
		st, err = h.Stats("/berth/c2")
		if err != nil || st.MemoryLimit != 0 || st.MemoryUsage != 1 {
			t.Errorf("unlimited memory: %+v %v", st, err)
		}
		if _, err := h.Stats("/berth/none"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("missing cgroup: %v", err)
		}
		if _, err := h.Stats("/berth/bad"); err == nil {
			t.Error("malformed value accepted")
		}
		pids, err := h.Procs("/berth/c1")
		if err != nil || !slices.Equal(pids, []int{10, 11, 12}) {
			t.Errorf("procs %v %v", pids, err)
		}
		if _, err := h.Procs("/berth/none"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("procs of missing cgroup: %v", err)
		}
	}
}

func TestStatsV2(t *testing.T) {
	root := writeTree(t, map[string]string{
		"berth/c1/cpu.stat":       "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
		"berth/c1/memory.current": "8192\n",
		"berth/c1/memory.max":     "max\n",
		"berth/c1/pids.current":   "2\n",
		"berth/c1/pids.max":       "64\n",
		"berth/c1/cgroup.procs":   "7\n8\n",
	})
	h := Hierarchy{Root: root, Mode: V2}
	st, err := h.Stats("/berth/c1")
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{CPUUsage: 2500000, MemoryUsage: 8192, MemoryLimit: 0, Pids: 2, PidsLimit: 64}
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	pids, err := h.Procs("/berth/c1")
	if err != nil || !slices.Equal(pids, []int{7, 8}) {
		t.Errorf("procs %v %v", pids, err)
	}
	if _, err := h.Stats("/berth/none"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing cgroup: %v", err)
	}
}

func TestRemoveFakeTree(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"memory/berth/c1/child", "pids/berth/c1", "unified/berth/c1", "cpu/other"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h := Hierarchy{Root: root, Mode: Hybrid}
	if err := h.Remove("/berth/c1"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"memory/berth/c1", "pids/berth/c1", "unified/berth/c1"} {
		if _, err := os.Stat(filepath.Join(root, d)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "memory/berth")); err != nil {
		t.Errorf("parent removed: %v", err)
	}
	if err := h.Remove("/berth/c1"); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if err := h.Remove("/"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("remove root: %v", err)
	}
}

// TestHost creates a real cgroup, moves nothing into it, reads it and
// removes it again.
func TestHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
	h := Host()
	if h.Mode == Unavailable {
		t.Skip("no cgroups mounted")
	}
	parent := fmt.Sprintf("/berth-test-%d", os.Getpid())
	p := parent + "/cgroups"
	var dirs []string
	if h.Mode == V2 {
		dirs = []string{h.dir("", p)}
	} else {
		dirs = []string{h.dir("memory", p), h.dir("pids", p), h.dir("cpuacct", p)}
	}
	t.Cleanup(func() {
		_ = h.Remove(p)
		_ = h.Remove(parent)
	})
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	limitFile := filepath.Join(dirs[0], "memory.limit_in_bytes")
	if h.Mode == V2 {
		limitFile = filepath.Join(dirs[0], "memory.max")
	}
	if err := os.WriteFile(limitFile, []byte("33554432"), 0o644); err != nil {
		t.Logf("cannot set a memory limit: %v", err)
	}
	st, err := ReadStats(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mode %v, stats %+v", h.Mode, st)
	if h.Mode != V2 && st.MemoryLimit != 32<<20 {
		t.Errorf("memory limit %d", st.MemoryLimit)
	}
	if pids, err := Procs(p); err != nil || len(pids) != 0 {
		t.Errorf("procs %v %v", pids, err)
	}
	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there", d)
		}
	}
	if DetectMode() != h.Mode {
		t.Error("mode changed")
	}
}
