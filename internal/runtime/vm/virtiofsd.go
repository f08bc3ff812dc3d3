package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	goruntime "runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// virtiofsdProc is a started virtiofsd; exited closes when it has been
// reaped.
type virtiofsdProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// virtiofsdArgs is the argv (without argv[0]) of a virtiofsd serving source
// on socket; every share of a VM, the root too, uses the same settings.
func virtiofsdArgs(socket, source string) []string {
	return []string{
		"--socket-path=" + socket,
		"-o", "source=" + qopt(source),
		"-o", "cache=auto",
		"-o", "max_idle_threads=4",
	}
}

// launchVirtiofsd starts virtiofsd, logging to logPath. With binds it runs
// in a mount namespace of its own in which binds were made first (see
// runInMountNS). Like QEMU it gets SIGKILL when its owner dies.
func launchVirtiofsd(bin string, args []string, logPath string, binds []NSBind) (*virtiofsdProc, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	p := &virtiofsdProc{cmd: cmd, exited: make(chan struct{})}
	if len(binds) > 0 {
		errc := make(chan error, 1)
		go runInMountNS(p, binds, errc)
		if err := <-errc; err != nil {
			return nil, err
		}
		return p, nil
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// runInMountNS starts p's command in a new mount namespace made on an OS
// thread of its own (the oci backend's mountns.go does the same for crun):
// the locked thread unshares its mount namespace, makes every mount a slave
// (nothing propagates back to the host), makes binds, and forks the command,
// which inherits that namespace. It reports the start on errc, then waits
// for the command: the thread must outlive it, because Pdeathsig fires when
// the thread that forked the child ends. The goroutine returns still locked,
// so the Go runtime ends the thread instead of reusing it.
func runInMountNS(p *virtiofsdProc, binds []NSBind, errc chan<- error) {
	goruntime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread, which Go never ends: keep it locked so that the
		// new goroutine gets another thread, and give it back untouched
		// once that one is locked.
		inner := make(chan error, 1)
		go runInMountNS(p, binds, inner)
		errc <- <-inner
		goruntime.UnlockOSThread()
		return
	}
	if err := enterMountNS(binds); err != nil {
		errc <- err
		return
	}
	if err := p.cmd.Start(); err != nil {
		errc <- err
		return
	}
	errc <- nil
	_ = p.cmd.Wait()
	close(p.exited)
}

// enterMountNS moves the calling (locked, never reused) thread into a new
// mount namespace and makes binds there.
func enterMountNS(binds []NSBind) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make mounts slaves: %w", err)
	}
	for _, b := range binds {
		flags := uintptr(unix.MS_BIND)
		if b.Recursive {
			flags |= unix.MS_REC
		}
		if err := unix.Mount(b.Source, b.Target, "", flags, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", b.Source, b.Target, err)
		}
		if b.ReadOnly {
			if err := makeReadOnly(b.Target, b.Recursive); err != nil {
				return fmt.Errorf("make %s read-only: %w", b.Target, err)
			}
		}
	}
	return nil
}

// makeReadOnly makes the mount at target (and its submounts when
// recursive) read-only, leaving its other flags alone.
func makeReadOnly(target string, recursive bool) error {
	var flags uint
	if recursive {
		flags = unix.AT_RECURSIVE
	}
	err := unix.MountSetattr(unix.AT_FDCWD, target, flags, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	if !errors.Is(err, unix.ENOSYS) {
		return err
	}
	// Before Linux 5.12: remount the top mount only, keeping its flags.
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return err
	}
	keep := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME)
	return unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|keep, "")
}

// awaitVirtiofsd waits until p listens on socket; if it exits first, the
// error carries its log's tail.
func (m *Machine) awaitVirtiofsd(ctx context.Context, p *virtiofsdProc, socket, logName string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return m.failure("virtiofsd exited before listening: %s", tail(m.path(logName), 5))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return m.failure("virtiofsd did not listen within 5s: %s", tail(m.path(logName), 5))
		}
	}
}
