package spec

import (
	"context"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Opt changes a spec. Options apply in the order given; each returns an error
// wrapping an errdefs class when its input is unusable.
type Opt func(ctx context.Context, s *specs.Spec) error

// DefaultPath is the PATH a process gets when its environment has none
// (Docker's default).
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Version is the ociVersion written into generated specs. It is not the
// library's specs.Version (1.3.0): Debian bookworm's crun 1.8.1 rejects
// versions above 1.1 ("unknown version specified"), and nothing generated
// here needs a newer one.
const Version = "1.1.0"

// maxNoFile is the RLIMIT_NOFILE a container gets when the caller may grant it.
const maxNoFile = 1048576

// generation carries the choices Generate applies after every option, because
// they depend on the final spec: the capability set (Docker's add/drop rules
// do not depend on order) and the seccomp profile (Docker's default profile
// allows syscalls according to the capabilities).
type generation struct {
	capAdd, capDrop []string
	seccomp         string
}

type generationKey struct{}

func generationFrom(ctx context.Context) *generation {
	g, _ := ctx.Value(generationKey{}).(*generation)
	return g
}

// Generate returns Docker's default spec for a Linux container with opts
// applied, then capabilities and the seccomp profile settled (see WithCapAdd
// and WithSeccomp).
//
// The defaults: new pid, mount, uts, ipc and network namespaces; Docker's 14
// default capabilities; Docker's default seccomp profile; Docker's masked and
// read-only paths; /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys (ro) and
// /sys/fs/cgroup (ro); the standard character devices; RLIMIT_NOFILE at
// 1048576, or the caller's hard limit when lower (a container cannot raise it
// without CAP_SYS_RESOURCE); args "/bin/sh", cwd "/", user 0:0, PATH set.
func Generate(ctx context.Context, opts ...Opt) (*specs.Spec, error) {
	s, err := defaultSpec()
	if err != nil {
		return nil, err
	}
	g := &generation{}
	ctx = context.WithValue(ctx, generationKey{}, g)
	for _, o := range opts {
		if err := o(ctx, s); err != nil {
			return nil, err
		}
	}
	if err := applyCapabilities(s, g.capAdd, g.capDrop); err != nil {
		return nil, err
	}
	if err := applySeccomp(s, g.seccomp); err != nil {
		return nil, err
	}
	return s, nil
}

func defaultSpec() (*specs.Spec, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return nil, fmt.Errorf("generate spec: read RLIMIT_NOFILE: %w", err)
	}
	nofile := min(uint64(maxNoFile), rl.Max)
	caps := DefaultCapabilities()
	s := &specs.Spec{
		Version: Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			Args: []string{"/bin/sh"},
			Env:  []string{DefaultPath},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  caps,
				Permitted: append([]string(nil), caps...),
				Effective: append([]string(nil), caps...),
			},
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_NOFILE", Hard: nofile, Soft: nofile},
			},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"ro", "nosuid", "noexec", "nodev"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		},
		Linux: &specs.Linux{
			MaskedPaths: []string{
				"/proc/asound",
				"/proc/acpi",
				"/proc/interrupts",
				"/proc/kcore",
				"/proc/keys",
				"/proc/latency_stats",
				"/proc/timer_list",
				"/proc/timer_stats",
				"/proc/sched_debug",
				"/proc/scsi",
				"/sys/firmware",
				"/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{
				"/proc/bus",
				"/proc/fs",
				"/proc/irq",
				"/proc/sys",
				"/proc/sysrq-trigger",
			},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.NetworkNamespace},
			},
			Resources: &specs.LinuxResources{Devices: defaultDeviceRules()},
		},
	}
	return s, nil
}

// defaultDeviceRules denies every device, then allows the character devices
// every container gets (the runtime creates the nodes themselves).
func defaultDeviceRules() []specs.LinuxDeviceCgroup {
	allow := func(major, minor int64) specs.LinuxDeviceCgroup {
		r := specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Access: "rwm"}
		if minor >= 0 {
			r.Minor = &minor
		}
		return r
	}
	return []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		allow(1, 3),    // null
		allow(1, 5),    // zero
		allow(1, 7),    // full
		allow(1, 8),    // random
		allow(1, 9),    // urandom
		allow(5, 0),    // tty
		allow(5, 1),    // console
		allow(5, 2),    // ptmx
		allow(136, -1), // pts/*
	}
}
