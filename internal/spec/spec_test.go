package spec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
)

func generate(t *testing.T, opts ...Opt) *specs.Spec {
	t.Helper()
	s, err := Generate(context.Background(), opts...)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return s
}

func TestDefaults(t *testing.T) {
	s := generate(t)
	if s.Version != Version {
		t.Errorf("version %q", s.Version)
	}
	var nsTypes []specs.LinuxNamespaceType
	for _, ns := range s.Linux.Namespaces {
		nsTypes = append(nsTypes, ns.Type)
		if ns.Path != "" {
			t.Errorf("namespace %s has path %q", ns.Type, ns.Path)
		}
	}
	for _, want := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.UTSNamespace, specs.IPCNamespace, specs.NetworkNamespace} {
		if !slices.Contains(nsTypes, want) {
			t.Errorf("namespace %s missing from %v", want, nsTypes)
		}
	}
	if slices.Contains(nsTypes, specs.UserNamespace) || slices.Contains(nsTypes, specs.CgroupNamespace) {
		t.Errorf("unexpected namespaces %v", nsTypes)
	}
	caps := s.Process.Capabilities
	if len(caps.Bounding) != 14 || !slices.Equal(caps.Bounding, DefaultCapabilities()) {
		t.Errorf("bounding %v", caps.Bounding)
	}
	if !slices.Equal(caps.Effective, caps.Bounding) || !slices.Equal(caps.Permitted, caps.Bounding) {
		t.Errorf("effective %v permitted %v", caps.Effective, caps.Permitted)
	}
	if len(caps.Inheritable) != 0 || len(caps.Ambient) != 0 {
		t.Errorf("inheritable %v ambient %v", caps.Inheritable, caps.Ambient)
	}
	if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno || len(s.Linux.Seccomp.Syscalls) == 0 {
		t.Errorf("seccomp not Docker's default: %+v", s.Linux.Seccomp)
	}
	dests := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		dests[m.Destination] = m
	}
	for _, d := range []string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"} {
		if _, ok := dests[d]; !ok {
			t.Errorf("mount %s missing", d)
		}
	}
	for _, d := range []string{"/sys", "/sys/fs/cgroup"} {
		if !slices.Contains(dests[d].Options, "ro") {
			t.Errorf("mount %s not read-only: %v", d, dests[d].Options)
		}
	}
	if dests["/dev"].Type != "tmpfs" {
		t.Errorf("/dev type %q", dests["/dev"].Type)
	}
	for _, p := range []string{"/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/timer_list"} {
		if !slices.Contains(s.Linux.MaskedPaths, p) {
			t.Errorf("%s not masked", p)
		}
	}
	for _, p := range []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs", "/proc/irq"} {
		if !slices.Contains(s.Linux.ReadonlyPaths, p) {
			t.Errorf("%s not read-only", p)
		}
	}
	if d := s.Linux.Resources.Devices; len(d) == 0 || d[0].Allow || d[0].Access != "rwm" {
		t.Errorf("device rules do not start with deny-all: %+v", d)
	}
	if s.Process.NoNewPrivileges {
		t.Error("NoNewPrivileges set by default")
	}
	if s.Process.Cwd != "/" || !slices.Equal(s.Process.Env, []string{DefaultPath}) || s.Process.Terminal {
		t.Errorf("process %+v", s.Process)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	want := min(uint64(1048576), rl.Max)
	if len(s.Process.Rlimits) != 1 || s.Process.Rlimits[0].Type != "RLIMIT_NOFILE" ||
		s.Process.Rlimits[0].Hard != want || s.Process.Rlimits[0].Soft != want {
		t.Errorf("rlimits %+v, want NOFILE %d", s.Process.Rlimits, want)
	}
	if s.Process.Rlimits[0].Hard > rl.Max {
		t.Errorf("NOFILE %d above the caller's hard limit %d", s.Process.Rlimits[0].Hard, rl.Max)
	}
}

func TestSimpleOptions(t *testing.T) {
	s := generate(t,
		WithRootfs("/var/lib/x/rootfs", true),
		WithProcessArgs("echo", "hi"),
		WithCwd("/work"),
		WithTTY(true),
		WithConsoleSize(80, 24),
		WithHostname("box"),
		WithNoNewPrivileges(),
		WithCgroupsPath("/berth/c1"),
		WithAnnotations(map[string]string{"a": "1"}),
		WithAnnotations(map[string]string{"b": "2"}),
		WithNetNSPath("/var/run/netns/n1"),
	)
	if s.Root.Path != "/var/lib/x/rootfs" || !s.Root.Readonly {
		t.Errorf("root %+v", s.Root)
	}
	if !slices.Equal(s.Process.Args, []string{"echo", "hi"}) {
		t.Errorf("args %v", s.Process.Args)
	}
	if s.Process.Cwd != "/work" || !s.Process.Terminal || s.Process.ConsoleSize.Width != 80 || s.Process.ConsoleSize.Height != 24 {
		t.Errorf("process %+v", s.Process)
	}
	if s.Hostname != "box" || !s.Process.NoNewPrivileges || s.Linux.CgroupsPath != "/berth/c1" {
		t.Errorf("hostname %q nnp %v cgroups %q", s.Hostname, s.Process.NoNewPrivileges, s.Linux.CgroupsPath)
	}
	if s.Annotations["a"] != "1" || s.Annotations["b"] != "2" {
		t.Errorf("annotations %v", s.Annotations)
	}
	n := 0
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			n++
			if ns.Path != "/var/run/netns/n1" {
				t.Errorf("netns path %q", ns.Path)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d network namespaces", n)
	}
}

func TestInvalidOptions(t *testing.T) {
	for name, o := range map[string]Opt{
		"relative cwd":  WithCwd("work"),
		"no args":       WithProcessArgs(),
		"empty rootfs":  WithRootfs("", false),
		"tiny memory":   WithMemoryLimit(1024),
		"negative mem":  WithMemoryLimit(-1),
		"tiny cpus":     WithCPUs(0.001),
		"bad env":       WithEnv([]string{"NOEQUALS"}),
		"bad cap":       WithCapAdd([]string{"NET_WIZARD"}),
		"bad cap drop":  WithCapDrop([]string{"CAP_NOPE"}),
		"no seccomp":    WithSeccomp("/nonexistent/profile.json"),
		"relative dest": WithMounts([]specs.Mount{{Destination: "data"}}),
	} {
		_, err := Generate(context.Background(), o)
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: err %v, want ErrInvalidArgument", name, err)
		}
	}
}

func TestEnv(t *testing.T) {
	s := generate(t, WithEnv([]string{"A=1", "B=2"}), WithEnv([]string{"A=3", "C=x=y"}))
	want := []string{DefaultPath, "A=3", "B=2", "C=x=y"}
	if !slices.Equal(s.Process.Env, want) {
		t.Errorf("env %v, want %v", s.Process.Env, want)
	}
	s = generate(t, WithEnv([]string{"PATH=/only"}))
	if !slices.Equal(s.Process.Env, []string{"PATH=/only"}) {
		t.Errorf("env %v", s.Process.Env)
	}
	// PATH is added back when a spec without one gets env.
	s = &specs.Spec{}
	if err := WithEnv([]string{"A=1"})(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Process.Env, []string{"A=1", DefaultPath}) {
		t.Errorf("env %v", s.Process.Env)
	}
}

// The resource values are what runc and crun write on both cgroup versions:
// v1 memory.limit_in_bytes / cpu.cfs_quota_us + cpu.cfs_period_us / pids.max,
// v2 memory.max / cpu.max "quota period" / pids.max.
func TestResources(t *testing.T) {
	s := generate(t, WithMemoryLimit(64<<20), WithCPUs(1.5), WithPidsLimit(20))
	r := s.Linux.Resources
	if r.Memory == nil || r.Memory.Limit == nil || *r.Memory.Limit != 64<<20 {
		t.Errorf("memory %+v", r.Memory)
	}
	if r.Memory.Swap != nil {
		t.Errorf("swap set: %d", *r.Memory.Swap)
	}
	if r.CPU == nil || *r.CPU.Quota != 150000 || *r.CPU.Period != 100000 {
		t.Errorf("cpu %+v", r.CPU)
	}
	if r.Pids == nil || *r.Pids.Limit != 20 {
		t.Errorf("pids %+v", r.Pids)
	}
	s = generate(t, WithCPUs(0.5))
	if *s.Linux.Resources.CPU.Quota != 50000 {
		t.Errorf("0.5 CPUs: quota %d", *s.Linux.Resources.CPU.Quota)
	}
	s = generate(t, WithMemoryLimit(64<<20), WithMemoryLimit(0), WithCPUs(2), WithCPUs(0), WithPidsLimit(5), WithPidsLimit(-1))
	r = s.Linux.Resources
	if r.Memory.Limit != nil || r.CPU.Quota != nil || r.Pids != nil {
		t.Errorf("limits not removed: %+v %+v %+v", r.Memory, r.CPU, r.Pids)
	}
	if len(r.Devices) == 0 {
		t.Error("device rules lost")
	}
}

func TestCapabilities(t *testing.T) {
	has := func(s *specs.Spec, c string) bool { return slices.Contains(s.Process.Capabilities.Bounding, c) }
	s := generate(t, WithCapAdd([]string{"NET_ADMIN", "cap_sys_ptrace"}), WithCapDrop([]string{"CHOWN", "CAP_KILL"}))
	if !has(s, "CAP_NET_ADMIN") || !has(s, "CAP_SYS_PTRACE") || has(s, "CAP_CHOWN") || has(s, "CAP_KILL") || !has(s, "CAP_SETUID") {
		t.Errorf("add/drop: %v", s.Process.Capabilities.Bounding)
	}
	if !slices.Equal(s.Process.Capabilities.Effective, s.Process.Capabilities.Bounding) ||
		!slices.Equal(s.Process.Capabilities.Permitted, s.Process.Capabilities.Bounding) {
		t.Errorf("sets differ: %+v", s.Process.Capabilities)
	}
	// Docker's rules hold whatever the order of the options.
	for _, opts := range [][]Opt{
		{WithCapAdd([]string{"ALL"}), WithCapDrop([]string{"SYS_ADMIN"})},
		{WithCapDrop([]string{"SYS_ADMIN"}), WithCapAdd([]string{"ALL"})},
	} {
		s = generate(t, opts...)
		if has(s, "CAP_SYS_ADMIN") || !has(s, "CAP_NET_ADMIN") || !has(s, "CAP_SYS_MODULE") {
			t.Errorf("ALL minus SYS_ADMIN: %v", s.Process.Capabilities.Bounding)
		}
	}
	for _, opts := range [][]Opt{
		{WithCapDrop([]string{"ALL"}), WithCapAdd([]string{"NET_BIND_SERVICE"})},
		{WithCapAdd([]string{"NET_BIND_SERVICE"}), WithCapDrop([]string{"all"})},
	} {
		s = generate(t, opts...)
		if !slices.Equal(s.Process.Capabilities.Bounding, []string{"CAP_NET_BIND_SERVICE"}) {
			t.Errorf("drop ALL add one: %v", s.Process.Capabilities.Bounding)
		}
	}
	s = generate(t, WithCapDrop([]string{"ALL"}))
	if len(s.Process.Capabilities.Bounding) != 0 {
		t.Errorf("drop ALL: %v", s.Process.Capabilities.Bounding)
	}
	// Applied on its own, an option changes the spec at once.
	s = generate(t)
	if err := WithCapDrop([]string{"CHOWN"})(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if has(s, "CAP_CHOWN") {
		t.Errorf("standalone drop: %v", s.Process.Capabilities.Bounding)
	}
}

func syscallAllowed(s *specs.Spec, name string) bool {
	for _, sc := range s.Linux.Seccomp.Syscalls {
		if sc.Action == specs.ActAllow && len(sc.Args) == 0 && slices.Contains(sc.Names, name) {
			return true
		}
	}
	return false
}

func TestSeccomp(t *testing.T) {
	s := generate(t)
	if syscallAllowed(s, "mount") {
		t.Error("default profile allows mount without CAP_SYS_ADMIN")
	}
	if !syscallAllowed(s, "read") {
		t.Error("default profile denies read")
	}
	// The profile follows the final capabilities, even when added after it.
	s = generate(t, WithSeccomp(""), WithCapAdd([]string{"SYS_ADMIN"}))
	if !syscallAllowed(s, "mount") {
		t.Error("profile ignores CAP_SYS_ADMIN")
	}
	s = generate(t, WithSeccomp(SeccompUnconfined))
	if s.Linux.Seccomp != nil {
		t.Errorf("unconfined: %+v", s.Linux.Seccomp)
	}
	p := filepath.Join(t.TempDir(), "p.json")
	profile := `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}`
	if err := os.WriteFile(p, []byte(profile), 0o644); err != nil {
		t.Fatal(err)
	}
	s = generate(t, WithSeccomp(p))
	if s.Linux.Seccomp.DefaultAction != specs.ActAllow || len(s.Linux.Seccomp.Syscalls) != 1 || s.Linux.Seccomp.Syscalls[0].Names[0] != "chmod" {
		t.Errorf("file profile: %+v", s.Linux.Seccomp)
	}
	if err := os.WriteFile(p, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(context.Background(), WithSeccomp(p)); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad profile: %v", err)
	}
}

func TestMounts(t *testing.T) {
	s := generate(t, WithMounts([]specs.Mount{
		{Destination: "/data", Type: "bind", Source: "/srv/data", Options: []string{"rbind", "ro"}},
		{Destination: "/dev/shm/", Type: "tmpfs", Source: "shm", Options: []string{"size=1g"}},
	}))
	var data, shm int
	for _, m := range s.Mounts {
		switch m.Destination {
		case "/data":
			data++
		case "/dev/shm":
			shm++
			if !slices.Equal(m.Options, []string{"size=1g"}) {
				t.Errorf("/dev/shm not replaced: %+v", m)
			}
		}
	}
	if data != 1 || shm != 1 {
		t.Errorf("mounts %+v", s.Mounts)
	}
}
