package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
)

// Mount is one filesystem mount, described but not performed.
type Mount struct {
	Type    string   // filesystem type, e.g. "overlay" or "bind"
	Source  string   // device or source path
	Options []string // mount options, e.g. "ro", "lowerdir=…"
}

// Snapshotter prepares writable snapshots on top of read-only layer dirs.
//
// Lifecycle:
//
//	mounts, err := sn.Prepare(ctx, containerID, layerDirs) // layerDirs bottom→top
//	err = snapshot.MountAll(mounts, rootfs)
//	… run the container …
//	err = snapshot.Unmount(rootfs)
//	err = sn.Remove(ctx, containerID)
type Snapshotter interface {
	// Prepare creates the writable snapshot key over lowers (bottom→top) and
	// returns the mounts that assemble it. An existing key is ErrAlreadyExists.
	Prepare(ctx context.Context, key string, lowers []string) ([]Mount, error)
	// Remove deletes snapshot key and its writable content. The caller
	// unmounts it first. A missing key is not an error.
	Remove(ctx context.Context, key string) error
}

// MountAll mounts mounts one after another on target.
//
// Mount data longer than a page is rejected by the kernel; for an overlay
// mount whose lowerdir list is too long, MountAll rewrites the lower dirs
// relative to their common parent and mounts from a thread chdir'd there.
func MountAll(mounts []Mount, target string) error {
	for _, m := range mounts {
		if err := mountOne(m, target); err != nil {
			return err
		}
	}
	return nil
}

// flagOptions are the options that are mount(2) flags, not fs data.
var flagOptions = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "nodev": {false, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "bind": {false, unix.MS_BIND},
	"rbind": {false, unix.MS_BIND | unix.MS_REC}, "noatime": {false, unix.MS_NOATIME},
	"relatime": {false, unix.MS_RELATIME}, "sync": {false, unix.MS_SYNCHRONOUS},
}

// parseOptions splits options into mount flags and the data string.
func parseOptions(opts []string) (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range opts {
		if f, ok := flagOptions[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		data = append(data, o)
	}
	return flags, strings.Join(data, ",")
}

func mountOne(m Mount, target string) error {
	flags, data := parseOptions(m.Options)
	if len(data) < os.Getpagesize() {
		if err := unix.Mount(m.Source, target, m.Type, flags, data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Type, target, err)
		}
		return nil
	}
	if m.Type != "overlay" {
		return fmt.Errorf("mount %s on %s: options are %d bytes, over the page size: %w", m.Type, target, len(data), errdefs.ErrInvalidArgument)
	}
	dir, rel, err := relativeLowers(m.Options)
	if err != nil {
		return fmt.Errorf("mount overlay on %s: %w", target, err)
	}
	flags, data = parseOptions(rel)
	if len(data) >= os.Getpagesize() {
		return fmt.Errorf("mount overlay on %s: too many layers: options are %d bytes even with relative lower dirs, the limit is %d: %w",
			target, len(data), os.Getpagesize()-1, errdefs.ErrInvalidArgument)
	}
	if err := mountFrom(dir, m.Source, target, m.Type, flags, data); err != nil {
		return fmt.Errorf("mount overlay on %s (from %s): %w", target, dir, err)
	}
	return nil
}

// relativeLowers rewrites the lowerdir option relative to the lower dirs'
// longest common parent. upperdir/workdir must then be absolute.
func relativeLowers(opts []string) (string, []string, error) {
	out := make([]string, len(opts))
	copy(out, opts)
	for i, o := range opts {
		v, ok := strings.CutPrefix(o, "lowerdir=")
		if !ok {
			continue
		}
		lowers := strings.Split(v, ":")
		common := filepath.Dir(lowers[0])
		for _, l := range lowers {
			for !strings.HasPrefix(l, common+"/") && common != "/" {
				common = filepath.Dir(common)
			}
		}
		for j, l := range lowers {
			lowers[j] = strings.TrimPrefix(l, strings.TrimSuffix(common, "/")+"/")
		}
		out[i] = "lowerdir=" + strings.Join(lowers, ":")
		return common, out, nil
	}
	return "", nil, fmt.Errorf("options too long and no lowerdir to shorten: %w", errdefs.ErrInvalidArgument)
}

// mountFrom runs mount(2) on a dedicated OS thread whose working directory
// (unshared from the rest of the process with CLONE_FS) is dir, so relative
// paths in data resolve there. The thread is never returned to the Go
// scheduler: the goroutine exits locked and the runtime discards the thread.
func mountFrom(dir, source, target, fstype string, flags uintptr, data string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare fs: %w", err)
			return
		}
		if err := unix.Chdir(dir); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount(source, target, fstype, flags, data)
	}()
	return <-errc
}

// Unmount unmounts target, detaching lazily if it is busy. A target that is
// not mounted (or does not exist) is not an error.
func Unmount(target string) error {
	err := unix.Unmount(target, 0)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(target, unix.MNT_DETACH)
	}
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", target, err)
}
