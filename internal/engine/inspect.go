package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berthdev/berth/internal/cgroups"
	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime/oci"
	"github.com/berthdev/berth/internal/runtime/vm"
)

// ProcessInfo is one row of `berth top`.
type ProcessInfo struct {
	UID, PID, PPID int
	Cmd            string
}

// Top lists the host processes of a running workload: the container's
// cgroup members, or the QEMU process of a microVM.
func (e *Engine) Top(ctx context.Context, ref string) ([]ProcessInfo, error) {
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return nil, err
	}
	if c.State.Status != state.StatusRunning {
		return nil, fmt.Errorf("container %s is not running: %w", c.Name, errdefs.ErrConflict)
	}
	pids := []int{c.State.Pid}
	if c.Config.Isolation != state.IsolationVM {
		if ps, err := cgroups.Procs(cgroupPath(c.ID)); err == nil && len(ps) > 0 {
			pids = ps
		}
	}
	var out []ProcessInfo
	for _, pid := range pids {
		if pi, err := readProc(pid); err == nil {
			out = append(out, pi)
		}
	}
	return out, nil
}

func readProc(pid int) (ProcessInfo, error) {
	pi := ProcessInfo{PID: pid}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return pi, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "Uid:" {
			pi.UID, _ = strconv.Atoi(f[1])
		}
		if len(f) >= 2 && f[0] == "PPid:" {
			pi.PPID, _ = strconv.Atoi(f[1])
		}
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	pi.Cmd = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	return pi, nil
}

// Stats is one sample of a workload's resource use.
type Stats struct {
	ID, Name    string
	CPUPercent  float64
	MemoryUsage uint64
	MemoryLimit uint64
	Pids        uint64
}

// Stats samples CPU over interval and reads memory, from the container's
// cgroup, or for a microVM from its QEMU process as the host sees it.
func (e *Engine) Stats(ctx context.Context, ref string, interval time.Duration) (Stats, error) {
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return Stats{}, err
	}
	st := Stats{ID: c.ID, Name: c.Name}
	if c.State.Status != state.StatusRunning {
		return st, nil
	}
	read := func() (cpu uint64, mem, limit, pids uint64, err error) {
		if c.Config.Isolation == state.IsolationVM {
			cpu, mem, err = procUsage(c.State.Pid)
			return cpu, mem, uint64(vm.GuestMemoryMiB(c.Config.Memory, vm.DefaultMemoryMiB)) << 20, 1, err
		}
		s, err := cgroups.ReadStats(cgroupPath(c.ID))
		return s.CPUUsage, s.MemoryUsage, s.MemoryLimit, s.Pids, err
	}
	cpu0, _, _, _, err := read()
	if err != nil {
		return st, fmt.Errorf("stats of %s: %w", c.Name, err)
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return st, ctx.Err()
	case <-time.After(interval):
	}
	cpu1, mem, limit, pids, err := read()
	if err != nil {
		return st, fmt.Errorf("stats of %s: %w", c.Name, err)
	}
	if wall := time.Since(t0); wall > 0 && cpu1 >= cpu0 {
		st.CPUPercent = float64(cpu1-cpu0) / float64(wall.Nanoseconds()) * 100
	}
	st.MemoryUsage, st.MemoryLimit, st.Pids = mem, limit, pids
	return st, nil
}

// procUsage reads a process's CPU time (ns) and resident memory (bytes).
func procUsage(pid int) (cpuNS, rss uint64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 22 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	pages, _ := strconv.ParseUint(f[21], 10, 64)
	const tick = uint64(time.Second / 100) // USER_HZ is 100 on Linux
	return (ut + st) * tick, pages * uint64(os.Getpagesize()), nil
}

// SystemPrune removes stopped workloads and whatever a killed berth left
// behind with no record: mounts, run dirs, runtime state, cgroups and
// writable layers.
func (e *Engine) SystemPrune(ctx context.Context) ([]string, error) {
	removed, err := e.Prune(ctx)
	if err != nil {
		return removed, err
	}
	(&buildExecutor{e: e}).sweep(ctx) // steps of killed builds
	cs, err := e.db.List(ctx)
	if err != nil {
		return removed, err
	}
	known := map[string]bool{}
	for _, c := range cs {
		known[c.ID] = true
	}
	orphans := map[string]bool{}
	for _, dir := range []string{e.runRoot(), e.containersRoot(), filepath.Join(e.root, "snapshots"), e.ociRuntimeRoot(), e.vmStateRoot()} {
		ents, _ := os.ReadDir(dir)
		for _, ent := range ents {
			if len(ent.Name()) == 64 && !known[ent.Name()] {
				orphans[ent.Name()] = true
			}
		}
	}
	// VM state dirs are named by a hash of the ID (short socket paths):
	// ask the backend which IDs it holds.
	if rt, err := vm.New(e.vmOptions("", "")...); err == nil {
		if ids, err := rt.List(ctx); err == nil {
			for _, id := range ids {
				if len(id) == 64 && !known[id] {
					orphans[id] = true
				}
			}
		}
	}
	for _, id := range cgroupChildren("/berth") {
		if len(id) == 64 && !known[id] {
			orphans[id] = true
		}
	}
	for id := range orphans {
		ghost := &state.Container{ID: id, Name: id[:12]}
		for _, rtName := range []string{e.cfg.Runtime, "runc", "crun", vmRuntimeName} {
			if rtName == "" {
				continue
			}
			ghost.Runtime = rtName
			if rt, err := e.backend(ghost); err == nil {
				_ = rt.Delete(ctx, id, true)
			}
		}
		e.releaseRun(ctx, ghost)
		_ = cgroups.Remove(cgroupPath(id))
		_ = e.snaps.Remove(ctx, id)
		_ = os.RemoveAll(e.containerDir(id))
		removed = append(removed, id)
	}
	// Seccomp filter captures a SIGKILL interrupted (runtime/oci/seccomp.go).
	for _, name := range []string{e.cfg.Runtime, "crun", "runc"} {
		if rt, err := oci.New(name, e.ociRuntimeRoot()); name != "" && err == nil {
			removed = append(removed, rt.PruneCaptures(ctx)...)
		}
	}
	// Network leftovers and unused networks (network.go, networks.go).
	removed = append(removed, e.pruneNetworkLeftovers(ctx, known)...)
	nets, err := e.NetworkPrune(ctx)
	for _, n := range nets {
		removed = append(removed, "network "+n)
	}
	return removed, err
}

// cgroupChildren lists the cgroups directly under parent (in the pids
// controller on v1, the unified tree on v2).
func cgroupChildren(parent string) []string {
	dir := filepath.Join("/sys/fs/cgroup", parent)
	if m := cgroups.DetectMode(); m == cgroups.V1 || m == cgroups.Hybrid {
		dir = filepath.Join("/sys/fs/cgroup/pids", parent)
	}
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, ent := range ents {
		if ent.IsDir() {
			out = append(out, ent.Name())
		}
	}
	return out
}
