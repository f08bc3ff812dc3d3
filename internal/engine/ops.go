package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/berthdev/berth/internal/attach"
	"github.com/berthdev/berth/internal/cgroups"
	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// StartOptions tune Start.
type StartOptions struct {
	// Attach, when set, is the monitor's end of a connection on which the
	// caller has already written an attach request; the monitor serves it
	// from the first byte of output.
	Attach *os.File
}

// Start runs a created or exited workload: it starts its monitor and
// returns once the workload's process runs (or failed to start).
func (e *Engine) Start(ctx context.Context, ref string, opts StartOptions) (*state.Container, error) {
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return nil, err
	}
	if c.State.Status == state.StatusRunning {
		return c, fmt.Errorf("container %s is already running: %w", c.Name, errdefs.ErrConflict)
	}
	if err := os.MkdirAll(e.bundleDir(c.ID), 0o711); err != nil {
		return nil, fmt.Errorf("create run dir of %s: %w", c.Name, err)
	}
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer syncR.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		syncW.Close()
		return nil, err
	}
	defer devnull.Close()
	errlog, err := os.OpenFile(e.runDir(c.ID)+"/monitor.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		errlog = devnull
	} else {
		defer errlog.Close()
	}
	args := []string{"--root", e.root, "--state", e.stateDir, "monitor", c.ID}
	extra := []*os.File{syncW}
	if opts.Attach != nil {
		extra = append(extra, opts.Attach)
		args = append(args[:len(args)-1], "--attach-fd", "4", c.ID)
	}
	cmd := exec.Command(e.exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, errlog
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = append(os.Environ(), "BERTH_MONITOR=1")
	trace("start: spawning monitor")
	if err := cmd.Start(); err != nil {
		syncW.Close()
		return nil, fmt.Errorf("start monitor for %s: %w", c.Name, err)
	}
	syncW.Close()
	go func() { _ = cmd.Wait() }() // reap it if we live longer than it
	var msg syncMessage
	if err := json.NewDecoder(syncR).Decode(&msg); err != nil {
		return nil, fmt.Errorf("start %s: the monitor exited without a word (see %s/monitor.log)", c.Name, e.runDir(c.ID))
	}
	trace("start: monitor synced")
	if msg.Error != "" {
		return c, &StartError{Msg: msg.Error, Code: msg.Code}
	}
	c.State.Pid = msg.Pid
	c.State.Status = state.StatusRunning
	return c, nil
}

// StartError is a workload that could not start; Code is the exit code
// Docker would give (125, 126 or 127).
type StartError struct {
	Msg  string
	Code int
}

func (e *StartError) Error() string { return e.Msg }

// dialMonitor connects to a running workload's monitor and sends req.
func (e *Engine) dialMonitor(ctx context.Context, c *state.Container, req attach.Request) (net.Conn, attach.Reply, error) {
	conn, err := dialUnix(ctx, e.socketPath(c.ID))
	if err != nil {
		return nil, attach.Reply{}, fmt.Errorf("container %s is not running: %w", c.Name, errdefs.ErrConflict)
	}
	if err := attach.WriteJSONLine(conn, req); err != nil {
		conn.Close()
		return nil, attach.Reply{}, err
	}
	var rep attach.Reply
	if err := attach.ReadJSONLine(conn, &rep); err != nil {
		conn.Close()
		return nil, rep, fmt.Errorf("talk to the monitor of %s: %w", c.Name, err)
	}
	if rep.Error != "" {
		conn.Close()
		if rep.Code != 0 {
			return nil, rep, &StartError{Msg: c.Name + ": " + rep.Error, Code: rep.Code}
		}
		return nil, rep, fmt.Errorf("%s: %s", c.Name, rep.Error)
	}
	return conn, rep, nil
}

// Attach connects to a running workload's streams.
func (e *Engine) Attach(ctx context.Context, ref string, stdin bool, width, height uint16) (net.Conn, error) {
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return nil, err
	}
	conn, _, err := e.dialMonitor(ctx, c, attach.Request{Op: attach.OpAttach, Stdin: stdin, Width: width, Height: height})
	return conn, err
}

// ExecOptions describe a process to run in a workload.
type ExecOptions struct {
	Args          []string
	Env           []string
	WorkingDir    string
	User          string
	Tty           bool
	Stdin         bool
	Width, Height uint16
}

// Exec starts a process in a running workload; the returned connection
// carries its streams and ends with an Exit frame.
func (e *Engine) Exec(ctx context.Context, ref string, opts ExecOptions) (net.Conn, error) {
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return nil, err
	}
	if c.State.Status != state.StatusRunning {
		return nil, fmt.Errorf("container %s is not running: %w", c.Name, errdefs.ErrConflict)
	}
	req := attach.Request{Op: attach.OpExec, Stdin: opts.Stdin, Width: opts.Width, Height: opts.Height}
	req.Process = &specs.Process{Args: opts.Args, Env: opts.Env, Cwd: opts.WorkingDir, Terminal: opts.Tty}
	req.Process.User.Username = opts.User
	conn, _, err := e.dialMonitor(ctx, c, req)
	return conn, err
}

// Kill sends sig to a running workload's init process.
func (e *Engine) Kill(ctx context.Context, ref string, sig syscall.Signal) error {
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return err
	}
	if c.State.Status != state.StatusRunning {
		return fmt.Errorf("container %s is not running: %w", c.Name, errdefs.ErrConflict)
	}
	return e.kill(ctx, c, sig)
}

func (e *Engine) kill(ctx context.Context, c *state.Container, sig syscall.Signal) error {
	conn, _, err := e.dialMonitor(ctx, c, attach.Request{Op: attach.OpKill, Signal: int(sig)})
	if err == nil {
		conn.Close()
		return nil
	}
	// The monitor is gone: signal the process directly, if it is still ours.
	if alive(c.State.Pid, c.State.PidStart) {
		if kerr := unix.Kill(c.State.Pid, sig); kerr != nil {
			return fmt.Errorf("kill %s: %w", c.Name, kerr)
		}
		return nil
	}
	return err
}

// Wait blocks until the workload is not running and returns its exit code.
func (e *Engine) Wait(ctx context.Context, ref string) (int, error) {
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return 0, err
	}
	if c.State.Status == state.StatusRunning {
		if conn, _, err := e.dialMonitor(ctx, c, attach.Request{Op: attach.OpWait}); err == nil {
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			for {
				t, payload, err := attach.ReadFrame(conn)
				if err != nil {
					break
				}
				if t == attach.Exit {
					var m attach.ExitMessage
					_ = json.Unmarshal(payload, &m)
					stop()
					conn.Close()
					return m.Code, nil
				}
			}
			stop()
			conn.Close()
		}
		// No monitor to ask: poll until the state says it ended.
		for alive(c.State.MonitorPid, c.State.MonitorStart) || alive(c.State.Pid, c.State.PidStart) {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		if c, err = e.Inspect(ctx, c.ID); err != nil {
			return 0, err
		}
	}
	return c.State.ExitCode, nil
}

// waitMonitorGone waits until the workload's monitor process has exited.
func (e *Engine) waitMonitorGone(ctx context.Context, c *state.Container, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive(c.State.MonitorPid, c.State.MonitorStart) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// Stop sends the stop signal, waits up to timeout, then kills.
func (e *Engine) Stop(ctx context.Context, ref string, timeout time.Duration) error {
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return err
	}
	if c.State.Status != state.StatusRunning {
		return nil
	}
	sig := syscall.SIGTERM
	if c.Config.StopSignal != "" {
		if s, err := ParseSignal(c.Config.StopSignal); err == nil {
			sig = s
		}
	}
	if err := e.kill(ctx, c, sig); err == nil {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		_, werr := e.Wait(wctx, c.ID)
		cancel()
		if werr == nil {
			e.waitMonitorGone(ctx, c, 10*time.Second)
			return nil
		}
	}
	if err := e.kill(ctx, c, syscall.SIGKILL); err != nil && alive(c.State.Pid, c.State.PidStart) {
		return err
	}
	_, err = e.Wait(ctx, c.ID)
	e.waitMonitorGone(ctx, c, 10*time.Second)
	return err
}

// Remove deletes a workload; a running one only with force (it is killed).
func (e *Engine) Remove(ctx context.Context, ref string, force bool) error {
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return err
	}
	if c.State.Status == state.StatusRunning {
		if !force {
			return fmt.Errorf("cannot remove container %s: it is running: stop it first or use rm -f: %w", c.Name, errdefs.ErrConflict)
		}
		_ = e.kill(ctx, c, syscall.SIGKILL)
		if !e.waitMonitorGone(ctx, c, 15*time.Second) {
			_ = unix.Kill(c.State.MonitorPid, syscall.SIGKILL)
		}
	}
	return e.removeFiles(ctx, c, false)
}

// removeFiles deletes everything a workload has on the host, then its
// record. released says the run's runtime state and mounts are already gone
// (the monitor's own --rm). Every step tolerates what is already gone, so a
// remove that was interrupted can simply be run again.
func (e *Engine) removeFiles(ctx context.Context, c *state.Container, released bool) error {
	if !released {
		_, _ = e.db.Update(ctx, c.ID, func(c *state.Container) error { c.State.Status = state.StatusRemoving; return nil })
		if rt, err := e.backend(c); err == nil {
			_ = rt.Delete(ctx, c.ID, true)
		}
		if alive(c.State.Pid, c.State.PidStart) {
			_ = unix.Kill(c.State.Pid, syscall.SIGKILL)
		}
		e.releaseRun(ctx, c)
		_ = cgroups.Remove(cgroupPath(c.ID))
	}
	if err := e.snaps.Remove(ctx, c.ID); err != nil {
		return fmt.Errorf("remove writable layer of %s: %w", c.Name, err)
	}
	if err := os.RemoveAll(e.containerDir(c.ID)); err != nil {
		return fmt.Errorf("remove files of %s: %w", c.Name, err)
	}
	if err := e.db.Delete(ctx, c.ID); err != nil {
		return err
	}
	if c.Config.AutoRemove { // like Docker, --rm takes the anonymous volumes along (volume.go)
		e.removeAnonymousVolumes(ctx, c)
	}
	return nil
}

// Inspect returns a workload's record with its state checked against the
// kernel: a "running" workload whose monitor and process are gone is
// recorded as exited.
func (e *Engine) Inspect(ctx context.Context, ref string) (*state.Container, error) {
	c, err := e.db.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	return e.refresh(ctx, c), nil
}

func (e *Engine) refresh(ctx context.Context, c *state.Container) *state.Container {
	if c.State.Status != state.StatusRunning {
		return c
	}
	if alive(c.State.MonitorPid, c.State.MonitorStart) || (c.State.MonitorPid == 0 && time.Since(c.State.StartedAt) < 30*time.Second) {
		return c
	}
	if alive(c.State.Pid, c.State.PidStart) {
		if c.State.Error == "" {
			c.State.Error = "monitor died; the process still runs (berth rm -f removes it)"
		}
		return c
	}
	// Monitor and process are gone without recording the exit.
	updated, err := e.db.Update(ctx, c.ID, func(c *state.Container) error {
		if c.State.Status == state.StatusRunning && !alive(c.State.MonitorPid, c.State.MonitorStart) {
			c.State.Status = state.StatusExited
			c.State.ExitCode = 255
			c.State.Error = "monitor was killed; exit status unknown"
			c.State.FinishedAt = time.Now().UTC()
			c.State.Pid, c.State.MonitorPid = 0, 0
		}
		return nil
	})
	if err != nil {
		return c
	}
	e.releaseRun(ctx, updated)
	if rt, err := e.backend(updated); err == nil {
		_ = rt.Delete(ctx, c.ID, true)
	}
	return updated
}

// List returns workloads, running ones only unless all.
func (e *Engine) List(ctx context.Context, all bool) ([]*state.Container, error) {
	cs, err := e.db.List(ctx)
	if err != nil {
		return nil, err
	}
	out := cs[:0]
	for _, c := range cs {
		c = e.refresh(ctx, c)
		if all || c.State.Status == state.StatusRunning {
			out = append(out, c)
		}
	}
	return out, nil
}

// Prune removes every workload that is not running.
func (e *Engine) Prune(ctx context.Context) ([]string, error) {
	cs, err := e.List(ctx, true)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, c := range cs {
		if c.State.Status == state.StatusRunning {
			continue
		}
		if err := e.removeFiles(ctx, c, false); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, c.ID)
	}
	return removed, errors.Join(errs...)
}
