package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
)

// DefaultRoot is where the cgroup hierarchies are mounted.
const DefaultRoot = "/sys/fs/cgroup"

// Mode is how the host mounts cgroups.
type Mode int

// The cgroup modes.
const (
	// Unavailable: no cgroup mount found.
	Unavailable Mode = iota
	// V1: one v1 hierarchy per controller under /sys/fs/cgroup.
	V1
	// Hybrid: v1 controllers, plus a cgroup2 mount at /sys/fs/cgroup/unified
	// holding no controllers that matter here.
	Hybrid
	// V2: the unified hierarchy mounted at /sys/fs/cgroup.
	V2
)

func (m Mode) String() string {
	switch m {
	case V1:
		return "v1"
	case Hybrid:
		return "hybrid"
	case V2:
		return "v2"
	}
	return "unavailable"
}

// DetectMode detects the host's cgroup mode from the filesystems mounted at
// /sys/fs/cgroup and /sys/fs/cgroup/unified.
func DetectMode() Mode { return modeAt(DefaultRoot, fsMagic) }

func fsMagic(p string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return 0, err
	}
	return st.Type, nil
}

func modeAt(root string, magic func(string) (int64, error)) Mode {
	m, err := magic(root)
	if err != nil {
		return Unavailable
	}
	if m == unix.CGROUP2_SUPER_MAGIC {
		return V2
	}
	if m, err := magic(filepath.Join(root, "unified")); err == nil && m == unix.CGROUP2_SUPER_MAGIC {
		return Hybrid
	}
	if m, err := magic(filepath.Join(root, "memory")); err == nil && m == unix.CGROUP_SUPER_MAGIC {
		return V1
	}
	return Unavailable
}

// Stats is a cgroup's resource usage. A value the host does not account
// (controller missing) is 0.
type Stats struct {
	// CPUUsage is the CPU time consumed, in nanoseconds.
	CPUUsage uint64
	// MemoryUsage is the memory charged, page cache included, in bytes.
	MemoryUsage uint64
	// MemoryLimit is the memory limit in bytes; 0 when unlimited.
	MemoryLimit uint64
	// Pids is the number of tasks.
	Pids uint64
	// PidsLimit is the task limit; 0 when unlimited.
	PidsLimit uint64
}

// Hierarchy is a cgroup mount root read in one mode. Tests build one over a
// fake tree; everything else uses Host.
type Hierarchy struct {
	Root string
	Mode Mode
}

// Host returns the host's hierarchy at /sys/fs/cgroup.
func Host() Hierarchy { return Hierarchy{Root: DefaultRoot, Mode: DetectMode()} }

// ReadStats reads the usage of cgroupsPath (as in a spec's linux.cgroupsPath) on
// the host; see Hierarchy.Stats.
func ReadStats(cgroupsPath string) (Stats, error) { return Host().Stats(cgroupsPath) }

// Procs lists the PIDs in cgroupsPath on the host; see Hierarchy.Procs.
func Procs(cgroupsPath string) ([]int, error) { return Host().Procs(cgroupsPath) }

// Remove removes cgroupsPath from every hierarchy on the host; see
// Hierarchy.Remove.
func Remove(cgroupsPath string) error { return Host().Remove(cgroupsPath) }

// v1 controllers read by Stats and Procs, and the order Procs tries them.
var v1Controllers = []string{"pids", "memory", "cpuacct", "cpu", "cpuset", "devices", "freezer", "blkio"}

func (h Hierarchy) dir(controller, cgroupsPath string) string {
	rel := filepath.Join("/", cgroupsPath)
	if h.Mode == V2 {
		return filepath.Join(h.Root, rel)
	}
	return filepath.Join(h.Root, controller, rel)
}

// Stats reads CPU, memory and pids usage of cgroupsPath: under
// <root>/<controller>/<path> in v1 and hybrid modes, <root>/<path> in v2.
// A cgroup that does not exist is an error wrapping errdefs.ErrNotFound.
func (h Hierarchy) Stats(cgroupsPath string) (Stats, error) {
	var (
		st  Stats
		err error
	)
	if h.Mode == V2 {
		st, err = h.statsV2(cgroupsPath)
	} else {
		st, err = h.statsV1(cgroupsPath)
	}
	if err != nil {
		return Stats{}, fmt.Errorf("read cgroup stats %s: %w", cgroupsPath, err)
	}
	return st, nil
}

func (h Hierarchy) statsV1(p string) (Stats, error) {
	var st Stats
	found := false
	read := func(controller, file string, dst *uint64, unlimitedAbove uint64) error {
		dir := h.dir(controller, p)
		if _, err := os.Stat(dir); err != nil {
			return nil // controller not mounted or cgroup not in it
		}
		found = true
		v, err := readUint(filepath.Join(dir, file))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if unlimitedAbove != 0 && v >= unlimitedAbove {
			v = 0
		}
		*dst = v
		return nil
	}
	for _, r := range []struct {
		controller, file string
		dst              *uint64
		unlimitedAbove   uint64
	}{
		{"cpuacct", "cpuacct.usage", &st.CPUUsage, 0},
		{"memory", "memory.usage_in_bytes", &st.MemoryUsage, 0},
		// The kernel reports "no limit" as the page-aligned maximum.
		{"memory", "memory.limit_in_bytes", &st.MemoryLimit, 1 << 62},
		{"pids", "pids.current", &st.Pids, 0},
		{"pids", "pids.max", &st.PidsLimit, 0},
	} {
		if err := read(r.controller, r.file, r.dst, r.unlimitedAbove); err != nil {
			return Stats{}, err
		}
	}
	if !found {
		return Stats{}, fmt.Errorf("no cgroup %s under %s: %w", p, h.Root, errdefs.ErrNotFound)
	}
	return st, nil
}

func (h Hierarchy) statsV2(p string) (Stats, error) {
	dir := h.dir("", p)
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Stats{}, fmt.Errorf("no cgroup %s under %s: %w", p, h.Root, errdefs.ErrNotFound)
		}
		return Stats{}, err
	}
	var st Stats
	for _, r := range []struct {
		file string
		dst  *uint64
	}{
		{"memory.current", &st.MemoryUsage},
		{"memory.max", &st.MemoryLimit},
		{"pids.current", &st.Pids},
		{"pids.max", &st.PidsLimit},
	} {
		v, err := readUint(filepath.Join(dir, r.file))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Stats{}, err
		}
		*r.dst = v
	}
	usec, err := readKey(filepath.Join(dir, "cpu.stat"), "usage_usec")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Stats{}, err
	}
	st.CPUUsage = usec * 1000
	return st, nil
}

// readUint reads a file holding one number, or "max" (read as 0: unlimited).
func readUint(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", p, err)
	}
	return v, nil
}

// readKey reads the value of key from a flat-keyed file ("key value" lines).
func readKey(p, key string) (uint64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s %s: %w", p, key, err)
			}
			return n, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, nil
}

// Procs lists the PIDs in cgroupsPath (its cgroup.procs; in v1 from the
// first controller holding the cgroup). A cgroup that does not exist is an
// error wrapping errdefs.ErrNotFound.
func (h Hierarchy) Procs(cgroupsPath string) ([]int, error) {
	var dirs []string
	if h.Mode == V2 {
		dirs = []string{h.dir("", cgroupsPath)}
	} else {
		for _, c := range append(v1Controllers, "unified", "systemd") {
			dirs = append(dirs, h.dir(c, cgroupsPath))
		}
	}
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list cgroup %s processes: %w", cgroupsPath, err)
		}
		var pids []int
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("list cgroup %s processes: parse %q: %w", cgroupsPath, f, err)
			}
			pids = append(pids, pid)
		}
		return pids, nil
	}
	return nil, fmt.Errorf("list cgroup %s processes: no such cgroup under %s: %w", cgroupsPath, h.Root, errdefs.ErrNotFound)
}

// Remove removes cgroupsPath from every hierarchy mounted under the root
// (each v1 controller, the hybrid unified one, or the v2 tree), children
// first. It is for cleaning up after a runtime that could not (a SIGKILLed
// monitor): the cgroups must hold no processes. Missing directories are
// fine; the errors of the others are joined.
func (h Hierarchy) Remove(cgroupsPath string) error {
	if filepath.Clean("/"+cgroupsPath) == "/" {
		return fmt.Errorf("remove cgroup %q: refusing the root cgroup: %w", cgroupsPath, errdefs.ErrInvalidArgument)
	}
	var dirs []string
	if h.Mode == V2 {
		dirs = []string{h.dir("", cgroupsPath)}
	} else {
		entries, err := os.ReadDir(h.Root)
		if err != nil {
			return fmt.Errorf("remove cgroup %s: %w", cgroupsPath, err)
		}
		for _, e := range entries {
			// Skip the cpu,cpuacct style symlinks; the real mount is listed too.
			if e.IsDir() {
				dirs = append(dirs, h.dir(e.Name(), cgroupsPath))
			}
		}
	}
	var errs []error
	for _, d := range dirs {
		if err := removeTree(d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove cgroup %s: %w", cgroupsPath, err)
	}
	return nil
}

// removeTree rmdirs dir and its child cgroups, deepest first. cgroup
// directories cannot be unlinked file by file, only rmdir'ed once empty of
// child cgroups.
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "rmdir", Path: dir, Err: err}
	}
	return nil
}
