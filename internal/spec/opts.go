package spec

import (
	"context"
	"fmt"
	"maps"
	"path"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/errdefs"
)

// Resource values set here are what runc (and crun) apply on both cgroup v1
// and v2: the limit in bytes becomes memory.limit_in_bytes (v1) or memory.max
// (v2); quota/period become cpu.cfs_quota_us/cpu.cfs_period_us (v1) or
// cpu.max "quota period" (v2); the pids limit becomes pids.max on both.

// cpuPeriod is the CFS period used by WithCPUs, in microseconds (Docker's).
const cpuPeriod = 100000

// minMemory is the smallest memory limit Docker accepts (6 MiB).
const minMemory = 6 * 1024 * 1024

func ensureProcess(s *specs.Spec) *specs.Process {
	if s.Process == nil {
		s.Process = &specs.Process{}
	}
	return s.Process
}

func ensureResources(s *specs.Spec) *specs.LinuxResources {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	if s.Linux.Resources == nil {
		s.Linux.Resources = &specs.LinuxResources{}
	}
	return s.Linux.Resources
}

// WithRootfs sets the root filesystem's path (absolute, or relative to the
// bundle) and whether it is mounted read-only. Default: "rootfs", writable.
func WithRootfs(rootfs string, readonly bool) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		if rootfs == "" {
			return fmt.Errorf("set rootfs: empty path: %w", errdefs.ErrInvalidArgument)
		}
		s.Root = &specs.Root{Path: rootfs, Readonly: readonly}
		return nil
	}
}

// WithProcessArgs sets the process's argv. Default: "/bin/sh".
func WithProcessArgs(args ...string) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		if len(args) == 0 {
			return fmt.Errorf("set process args: no command: %w", errdefs.ErrInvalidArgument)
		}
		ensureProcess(s).Args = append([]string(nil), args...)
		return nil
	}
}

// WithEnv merges KEY=VALUE entries into the environment; a later entry wins
// over an earlier one with the same key. PATH stays at DefaultPath unless env
// sets it.
func WithEnv(env []string) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		p := ensureProcess(s)
		merged, err := mergeEnv(p.Env, env)
		if err != nil {
			return err
		}
		p.Env = merged
		return nil
	}
}

// mergeEnv returns base with over applied, keeping first-seen order, and
// DefaultPath added when neither sets PATH.
func mergeEnv(base, over []string) ([]string, error) {
	out := make([]string, 0, len(base)+len(over)+1)
	index := map[string]int{}
	for _, kv := range append(append([]string(nil), base...), over...) {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("set environment: %q is not KEY=VALUE: %w", kv, errdefs.ErrInvalidArgument)
		}
		if i, seen := index[k]; seen {
			out[i] = kv
			continue
		}
		index[k] = len(out)
		out = append(out, kv)
	}
	if _, ok := index["PATH"]; !ok {
		out = append(out, DefaultPath)
	}
	return out, nil
}

// WithCwd sets the process's working directory, an absolute path. Default "/".
func WithCwd(dir string) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		if !path.IsAbs(dir) {
			return fmt.Errorf("set working directory %q: not absolute: %w", dir, errdefs.ErrInvalidArgument)
		}
		ensureProcess(s).Cwd = dir
		return nil
	}
}

// WithTTY gives the process a pseudo-terminal. Default: none.
func WithTTY(tty bool) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		ensureProcess(s).Terminal = tty
		return nil
	}
}

// WithConsoleSize sets the terminal's initial size, in characters, for a
// process with a terminal. Default: the runtime's (usually 0x0).
func WithConsoleSize(width, height uint) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		ensureProcess(s).ConsoleSize = &specs.Box{Width: width, Height: height}
		return nil
	}
}

// WithHostname sets the container's hostname (in its UTS namespace).
// Default: the runtime's.
func WithHostname(name string) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		s.Hostname = name
		return nil
	}
}

// WithMemoryLimit caps the container's memory in bytes (at least 6 MiB, as
// Docker); 0 removes the limit. Swap is left at the kernel's default.
// Default: no limit.
func WithMemoryLimit(bytes int64) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		if bytes == 0 {
			if r := ensureResources(s); r.Memory != nil {
				r.Memory.Limit = nil
			}
			return nil
		}
		if bytes < minMemory {
			return fmt.Errorf("set memory limit %d: below the 6 MiB minimum: %w", bytes, errdefs.ErrInvalidArgument)
		}
		r := ensureResources(s)
		if r.Memory == nil {
			r.Memory = &specs.LinuxMemory{}
		}
		r.Memory.Limit = &bytes
		return nil
	}
}

// WithCPUs caps CPU time at cpus CPUs (Docker's --cpus): a CFS quota of
// cpus×100000 µs per 100000 µs period; 0 removes the limit. Default: no
// limit.
func WithCPUs(cpus float64) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		if cpus == 0 {
			if r := ensureResources(s); r.CPU != nil {
				r.CPU.Quota, r.CPU.Period = nil, nil
			}
			return nil
		}
		if cpus < 0.01 {
			return fmt.Errorf("set CPUs %g: below 0.01: %w", cpus, errdefs.ErrInvalidArgument)
		}
		quota := int64(cpus*cpuPeriod + 0.5)
		period := uint64(cpuPeriod)
		r := ensureResources(s)
		if r.CPU == nil {
			r.CPU = &specs.LinuxCPU{}
		}
		r.CPU.Quota, r.CPU.Period = &quota, &period
		return nil
	}
}

// WithPidsLimit caps the number of tasks in the container; n <= 0 removes the
// limit. Default: no limit.
func WithPidsLimit(n int64) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		r := ensureResources(s)
		if n <= 0 {
			r.Pids = nil
			return nil
		}
		r.Pids = &specs.LinuxPids{Limit: &n}
		return nil
	}
}

// WithNoNewPrivileges stops the process from gaining privileges (setuid
// binaries, file capabilities). Default: allowed, as Docker.
func WithNoNewPrivileges() Opt {
	return func(_ context.Context, s *specs.Spec) error {
		ensureProcess(s).NoNewPrivileges = true
		return nil
	}
}

// WithCgroupsPath sets the container's cgroup path, relative to each
// controller's mount (v1) or the unified mount (v2), e.g. "/berth/<id>".
// Default: the runtime's choice.
func WithCgroupsPath(p string) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		s.Linux.CgroupsPath = p
		return nil
	}
}

// WithAnnotations merges annotations into the spec's.
func WithAnnotations(a map[string]string) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		maps.Copy(s.Annotations, a)
		return nil
	}
}

// WithNetNSPath joins the network namespace at p (e.g. /var/run/netns/x)
// instead of creating a new one. An empty p keeps a new namespace.
func WithNetNSPath(p string) Opt {
	return func(_ context.Context, s *specs.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		for i, ns := range s.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				s.Linux.Namespaces[i].Path = p
				return nil
			}
		}
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: p})
		return nil
	}
}

// WithMounts adds mounts; one whose destination is already mounted replaces
// that mount in place (so a user's /dev/shm overrides the default one).
func WithMounts(mounts []specs.Mount) Opt {
	return func(_ context.Context, s *specs.Spec) error {
	next:
		for _, m := range mounts {
			if !path.IsAbs(m.Destination) {
				return fmt.Errorf("add mount %q: destination not absolute: %w", m.Destination, errdefs.ErrInvalidArgument)
			}
			m.Destination = path.Clean(m.Destination)
			for i := range s.Mounts {
				if path.Clean(s.Mounts[i].Destination) == m.Destination {
					s.Mounts[i] = m
					continue next
				}
			}
			s.Mounts = append(s.Mounts, m)
		}
		return nil
	}
}
