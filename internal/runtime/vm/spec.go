package vm

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

// loadSpec reads bundle/config.json.
func loadSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("read bundle %s: no config.json: %w", bundle, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("read bundle %s: %w", bundle, err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read bundle %s: config.json: %v: %w", bundle, err, errdefs.ErrInvalidArgument)
	}
	if s.Root == nil || s.Root.Path == "" {
		return nil, fmt.Errorf("read bundle %s: no root.path: %w", bundle, errdefs.ErrInvalidArgument)
	}
	if s.Process == nil || len(s.Process.Args) == 0 {
		return nil, fmt.Errorf("read bundle %s: no process args: %w", bundle, errdefs.ErrInvalidArgument)
	}
	return &s, nil
}

// rootPath is the bundle's root filesystem as an absolute path.
func rootPath(bundle string, s *specs.Spec) string {
	if filepath.IsAbs(s.Root.Path) {
		return s.Root.Path
	}
	return filepath.Join(bundle, s.Root.Path)
}

// resources maps the spec's cgroup limits onto the VM: the memory limit
// becomes guest RAM (at least MinMemoryMiB), the CPU quota vCPUs rounded up
// (at most the host's CPUs).
func resources(s *specs.Spec, defMiB int) (memMiB, vcpus int) {
	memMiB, vcpus = defMiB, 1
	if s.Linux == nil || s.Linux.Resources == nil {
		return
	}
	r := s.Linux.Resources
	if r.Memory != nil && r.Memory.Limit != nil {
		memMiB = GuestMemoryMiB(*r.Memory.Limit, defMiB)
	}
	if r.CPU != nil && r.CPU.Quota != nil && *r.CPU.Quota > 0 {
		period := uint64(100000)
		if r.CPU.Period != nil && *r.CPU.Period > 0 {
			period = *r.CPU.Period
		}
		q := uint64(*r.CPU.Quota)
		vcpus = int((q + period - 1) / period)
		vcpus = min(max(vcpus, 1), runtime.NumCPU())
	}
	return
}

// guestSetup is the agent's Setup message for spec s.
func guestSetup(s *specs.Spec, rootTag string) agentproto.Setup {
	set := agentproto.Setup{Hostname: s.Hostname, RootTag: rootTag, RootReadonly: s.Root.Readonly}
	for _, m := range s.Mounts {
		if kernelMount(m) {
			set.Mounts = append(set.Mounts, agentproto.Mount{Type: m.Type, Source: m.Source, Destination: m.Destination, Options: m.Options})
		}
	}
	if s.Linux != nil {
		set.Sysctl = s.Linux.Sysctl
		if r := s.Linux.Resources; r != nil && r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit > 0 {
			set.PidsLimit = *r.Pids.Limit
		}
	}
	return set
}

// kernelMount says whether m is a kernel filesystem the guest mounts
// itself; bind mounts become shares (shares.go), other types are skipped.
func kernelMount(m specs.Mount) bool {
	switch m.Type {
	case "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2":
		return true
	}
	return false
}

// guestProcess is the agent's Start message for an OCI process.
func guestProcess(p *specs.Process, stdio ioShape) agentproto.Process {
	gp := agentproto.Process{
		Args:           p.Args,
		Env:            p.Env,
		Cwd:            p.Cwd,
		UID:            p.User.UID,
		GID:            p.User.GID,
		AdditionalGids: p.User.AdditionalGids,
		Umask:          p.User.Umask,
		Terminal:       p.Terminal || stdio.terminal,
		NoNewPrivs:     p.NoNewPrivileges,
		Stdin:          stdio.stdin,
	}
	if p.ConsoleSize != nil {
		gp.Width, gp.Height = uint16(p.ConsoleSize.Width), uint16(p.ConsoleSize.Height)
	}
	if stdio.width > 0 {
		gp.Width, gp.Height = stdio.width, stdio.height
	}
	for _, r := range p.Rlimits {
		gp.Rlimits = append(gp.Rlimits, agentproto.Rlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
	}
	return gp
}

// ioShape is what the guest needs to know about a process's stdio.
type ioShape struct {
	stdin, terminal bool
	width, height   uint16
}

// GuestMemoryMiB is the guest RAM for a memory limit in bytes: defMiB
// without one, else the limit rounded up to MiB and at least MinMemoryMiB.
func GuestMemoryMiB(limit int64, defMiB int) int {
	if limit <= 0 {
		return defMiB
	}
	return max(int((limit+1<<20-1)>>20), MinMemoryMiB)
}
