package oci

import (
	"errors"
	"fmt"
	"os/exec"
	goruntime "runtime"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/cgroups"
)

// unifiedMount is the cgroup2 mount of a hybrid host.
const unifiedMount = cgroups.DefaultRoot + "/unified"

// needsV1View reports whether the runtime binary named name must run with
// the host's cgroups shown as plain v1: crun refuses a hybrid layout ("cgroups
// in hybrid mode not supported, drop all controllers from cgroupv2") as soon
// as it finds a cgroup2 mount at /sys/fs/cgroup/unified, even one holding
// only hugetlb as here. runc copes with hybrid hosts and runs unchanged.
func needsV1View(name string, mode cgroups.Mode) bool {
	return name == "crun" && mode == cgroups.Hybrid
}

// runCmd runs cmd (start and wait), in a private cgroup v1 view when the
// runtime needs one (see runInV1View).
func (r *Runtime) runCmd(cmd *exec.Cmd) error {
	if r.v1View {
		return runInV1View(cmd)
	}
	if err := startRegistered(cmd); err != nil {
		return err
	}
	return waitRegistered(cmd)
}

// runInV1View runs cmd (start and wait) in a mount namespace of its own in
// which the cgroup2 mount of a hybrid host is gone, so that the runtime sees
// (and uses) the v1 hierarchies only.
//
// The namespace is made fresh for each invocation, on an OS thread of its
// own: a goroutine locked to its thread unshares the thread's mount
// namespace (allowed in a multi-threaded process: it unshares the thread's
// fs_struct too), makes every mount a slave so that nothing done in it
// propagates back to the host, and lazily unmounts /sys/fs/cgroup/unified.
// os/exec forks the child from the calling thread, so the child inherits
// that namespace. The goroutine then returns still locked, which makes the
// Go runtime end the thread instead of reusing it: no other goroutine ever
// runs in the altered namespace.
//
// The thread lives until the runtime binary has exited: crun starts the
// container's process with CLONE_PARENT, making it a child of this thread,
// and a child attached while the thread is exiting could never be reaped.
// Once the thread ends, its children (the container's process) pass to
// another thread of this process, so wait4 works from anywhere.
//
// The main thread is never used: Go does not end it (a goroutine exiting
// locked to it wedges it instead), and /proc/self shows its namespace.
//
// Being a copy of the host's namespace taken at the call, the namespace
// holds every mount the caller made before (the container's rootfs),
// whatever the host's propagation flags; one kept across calls would miss
// later mounts on a host whose mounts are private, as here. The container's
// mount namespace is made by the runtime from this one; this one goes away
// with its last process.
func runInV1View(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go runLockedInV1View(cmd, errc)
	return <-errc
}

func runLockedInV1View(cmd *exec.Cmd, errc chan<- error) {
	goruntime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread: keep it locked, so that this goroutine gets
		// another thread, and give it back untouched.
		done := make(chan error, 1)
		go runLockedInV1View(cmd, done)
		errc <- <-done
		goruntime.UnlockOSThread()
		return
	}
	// No UnlockOSThread from here: the thread must die with this goroutine.
	if err := enterV1View(); err != nil {
		errc <- err
		return
	}
	if err := startRegistered(cmd); err != nil {
		errc <- err
		return
	}
	errc <- waitRegistered(cmd)
}

// enterV1View moves the calling thread into a new mount namespace without
// the cgroup2 mount. The thread must be locked and never reused.
func enterV1View() error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("cgroup v1 view: unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("cgroup v1 view: make mounts slaves: %w", err)
	}
	// Until it is no mount point any more (EINVAL), in case of stacked mounts.
	for range 8 {
		err := unix.Unmount(unifiedMount, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cgroup v1 view: unmount %s: %w", unifiedMount, err)
		}
	}
	return fmt.Errorf("cgroup v1 view: %s still mounted", unifiedMount)
}
