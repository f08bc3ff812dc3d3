package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

const newRoot = "/newroot"

// handledMounts are set up by the agent itself; the spec's entries for them
// are skipped (a VM has its own /dev and cgroup tree).
var handledMounts = map[string]bool{
	"/proc": true, "/sys": true, "/dev": true, "/dev/pts": true, "/sys/fs/cgroup": true,
}

// setup mounts the shared root, moves into it and applies the rest of s.
// It returns the kernel release.
func (a *agent) setup(s agentproto.Setup) (string, error) {
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return "", err
	}
	// The root is mounted read-write and made read-only last, so that
	// mount points can be created in it (as runc does).
	if err := unix.Mount(s.RootTag, newRoot, "virtiofs", 0, ""); err != nil {
		return "", fmt.Errorf("mount virtiofs %q on %s: %w", s.RootTag, newRoot, err)
	}
	shares, err := stageShares(s.Shares) // shares.go
	if err != nil {
		return "", err
	}
	defer shares.release()
	for _, d := range []string{"/proc", "/sys", "/dev"} {
		dst := newRoot + d
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return "", fmt.Errorf("root lacks %s: %w", d, err)
		}
		if err := unix.Mount(d, dst, "", unix.MS_MOVE, ""); err != nil {
			return "", fmt.Errorf("move %s into the root: %w", d, err)
		}
	}
	// switch_root without the exec: the agent stays PID 1, its binary stays
	// mapped from the initramfs it no longer sees.
	if err := unix.Chdir(newRoot); err != nil {
		return "", err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return "", fmt.Errorf("move the root to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return "", fmt.Errorf("chroot into the root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return "", err
	}

	base := []agentproto.Mount{
		{Type: "devpts", Source: "devpts", Destination: "/dev/pts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Type: "tmpfs", Source: "shm", Destination: "/dev/shm", Options: []string{"nosuid", "nodev", "mode=1777"}},
		{Type: "mqueue", Source: "mqueue", Destination: "/dev/mqueue", Options: []string{"nosuid", "nodev", "noexec"}},
		{Type: "cgroup2", Source: "cgroup2", Destination: "/sys/fs/cgroup", Options: []string{"nosuid", "nodev", "noexec"}},
	}
	for _, m := range base {
		if err := mount(m); err != nil {
			return "", err
		}
	}
	for _, l := range [][2]string{{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"}, {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}} {
		_ = os.Symlink(l[0], l[1])
	}
	for _, step := range mountPlan(s) {
		if step.share != nil {
			if err := shares.bindShare(*step.share); err != nil {
				return "", err
			}
			continue
		}
		m := *step.mount
		if handledMounts[filepath.Clean(m.Destination)] {
			continue
		}
		if err := mount(m); err != nil {
			logf("skipping mount on %s: %v", m.Destination, err)
		}
	}
	shares.release()
	if s.RootReadonly {
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return "", fmt.Errorf("make the root read-only: %w", err)
		}
	}
	if s.Hostname != "" {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return "", fmt.Errorf("set hostname %q: %w", s.Hostname, err)
		}
	}
	if err := loopbackUp(); err != nil {
		logf("bring lo up: %v", err)
	}
	for k, v := range s.Sysctl {
		p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return "", fmt.Errorf("set sysctl %s: %w", k, err)
		}
	}
	if s.PidsLimit > 0 {
		if err := a.limitPids(s.PidsLimit); err != nil {
			return "", err
		}
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

// limitPids makes the cgroup every workload process joins and caps it.
func (a *agent) limitPids(n int64) error {
	const cg = "/sys/fs/cgroup/workload"
	if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+pids"), 0); err != nil {
		return fmt.Errorf("enable the pids controller: %w", err)
	}
	if err := os.MkdirAll(cg, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(cg+"/pids.max", []byte(fmt.Sprint(n)), 0); err != nil {
		return fmt.Errorf("set pids.max to %d: %w", n, err)
	}
	a.cgroup = cg
	return nil
}

var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"noatime": {false, unix.MS_NOATIME}, "atime": {true, unix.MS_NOATIME},
	"relatime": {false, unix.MS_RELATIME}, "norelatime": {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME}, "nodiratime": {false, unix.MS_NODIRATIME},
}

// mountArgs turns OCI mount options into mount(2) flags and data; bind
// mounts of host paths cannot work in a VM and are refused.
func mountArgs(m agentproto.Mount) (typ string, flags uintptr, data string, err error) {
	var rest []string
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return "", 0, "", errors.New("bind mounts of host paths are not supported in a microVM")
		}
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		switch o {
		case "private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable":
			continue
		}
		rest = append(rest, o)
	}
	typ = m.Type
	switch typ {
	case "bind", "":
		return "", 0, "", errors.New("bind mounts of host paths are not supported in a microVM")
	case "cgroup":
		typ = "cgroup2"
	}
	return typ, flags, strings.Join(rest, ","), nil
}

// mount mounts a kernel filesystem inside the guest.
func mount(m agentproto.Mount) error {
	typ, flags, data, err := mountArgs(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(m.Destination, 0o755); err != nil {
		return fmt.Errorf("mount %s on %s: %w", typ, m.Destination, err)
	}
	if err := unix.Mount(m.Source, m.Destination, typ, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", typ, m.Destination, err)
	}
	return nil
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
