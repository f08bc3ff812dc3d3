package guest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

// Bind mounts of host data arrive as virtio-fs shares (agentproto.Share).
// Before the root switch the agent mounts each tag once at /shares/N in the
// initramfs and keeps an O_PATH descriptor of it; once in the new root it
// binds from /proc/self/fd/FD/PATH onto each destination, in the spec's
// order among the kernel filesystems, and finally detaches the staging
// mounts, so the workload sees the binds only.

const sharesStaging = "/shares"

// staged maps a share tag to the descriptor of its staging mount.
type staged map[string]int

// stageShares mounts every tag of shares (read-only when every bind from it
// is) and opens it. It runs in the initramfs, before the root switch.
func stageShares(shares []agentproto.Share) (staged, error) {
	st := staged{}
	ro := map[string]bool{}
	var tags []string
	for _, s := range shares {
		if _, seen := ro[s.Tag]; !seen {
			tags = append(tags, s.Tag)
			ro[s.Tag] = true
		}
		ro[s.Tag] = ro[s.Tag] && s.ReadOnly
	}
	for i, tag := range tags {
		dir := filepath.Join(sharesStaging, strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			st.release()
			return nil, err
		}
		var flags uintptr
		if ro[tag] {
			flags |= unix.MS_RDONLY
		}
		if err := unix.Mount(tag, dir, "virtiofs", flags, ""); err != nil {
			st.release()
			return nil, fmt.Errorf("mount virtiofs %q: %w", tag, err)
		}
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			_ = unix.Unmount(dir, unix.MNT_DETACH)
			st.release()
			return nil, fmt.Errorf("open share %q: %w", tag, err)
		}
		st[tag] = fd
	}
	return st, nil
}

// release detaches the staging mounts (through their descriptors, which
// work before and after the root switch) and closes the descriptors; the
// binds made from them stay.
func (st staged) release() {
	for tag, fd := range st {
		if err := unix.Unmount(fdPath(fd), unix.MNT_DETACH); err != nil {
			logf("detach share %q: %v", tag, err)
		}
		unix.Close(fd)
		delete(st, tag)
	}
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// bindShare binds s from its staged share onto s.Destination inside the
// current root, creating the mount point (an empty file for a file).
func (st staged) bindShare(s agentproto.Share) error {
	fd, ok := st[s.Tag]
	if !ok {
		return fmt.Errorf("bind on %s: share %q not mounted", s.Destination, s.Tag)
	}
	src := fdPath(fd)
	if s.Path != "" {
		if !filepath.IsLocal(s.Path) {
			return fmt.Errorf("bind on %s: path %q is not local to share %q", s.Destination, s.Path, s.Tag)
		}
		src += "/" + s.Path
	}
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("bind on %s: %w", s.Destination, err)
	}
	if err := makeMountPoint(s.Destination, fi.IsDir()); err != nil {
		return fmt.Errorf("bind on %s: mount point: %w", s.Destination, err)
	}
	if err := unix.Mount(src, s.Destination, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind on %s: %w", s.Destination, err)
	}
	if flags := bindFlags(s); flags != 0 {
		if err := unix.Mount("", s.Destination, "", unix.MS_REMOUNT|unix.MS_BIND|flags, ""); err != nil {
			return fmt.Errorf("bind on %s: remount with %v: %w", s.Destination, s.Options, err)
		}
	}
	return nil
}

// bindFlags are the mount flags of a bind: read-only and the flag options
// (nosuid, nodev, noexec…); other options are ignored.
func bindFlags(s agentproto.Share) uintptr {
	var flags uintptr
	for _, o := range s.Options {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
		}
	}
	if s.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	return flags
}

// makeMountPoint makes sure path exists, as a directory or as a file.
func makeMountPoint(path string, dir bool) error {
	if dir {
		return os.MkdirAll(path, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if errors.Is(err, unix.EISDIR) {
		return nil // mount(2) says what is wrong
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// mountStep is one mount of the guest's setup: a kernel filesystem or a
// share's bind.
type mountStep struct {
	mount *agentproto.Mount
	share *agentproto.Share
}

// mountPlan orders the kernel filesystems and the binds of s as the spec
// had them: each bind goes just before Mounts[Before].
func mountPlan(s agentproto.Setup) []mountStep {
	var plan []mountStep
	for i := 0; i <= len(s.Mounts); i++ {
		for j := range s.Shares {
			if min(max(s.Shares[j].Before, 0), len(s.Mounts)) == i {
				plan = append(plan, mountStep{share: &s.Shares[j]})
			}
		}
		if i < len(s.Mounts) {
			plan = append(plan, mountStep{mount: &s.Mounts[i]})
		}
	}
	return plan
}
