package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
)

var _ runtime.Process = (*process)(nil)

// consoleTimeout bounds the wait for the pty master once the runtime has
// returned (it has been sent by then; this only guards against a broken
// runtime).
const consoleTimeout = 5 * time.Second

// launch runs a runtime invocation that starts a process (`run` or `exec`,
// both --detach) with stdio wired, and hands the started process to p.
//
// Without a terminal the runtime gets pipe ends as its stdio and the
// container process inherits them; copying between the pipes and stdio
// starts only once the runtime has succeeded, so that on failure what the
// runtime printed can be read back as its error instead of reaching the
// container's output. With a terminal the runtime sends the pty master over
// a console socket.
func (r *Runtime) launch(ctx context.Context, verb, id string, args []string, stdio runtime.IO, p *process, processJSON []byte) error {
	fail := func(err error) error { return fmt.Errorf("%s %s %s: %w", r.name, verb, id, err) }
	dir, err := os.MkdirTemp(r.opts.tempDir, "berth-oci-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	logPath, pidFile := filepath.Join(dir, "log"), filepath.Join(dir, "pid")
	args = append(args, "--pid-file", pidFile)
	if processJSON != nil {
		pj := filepath.Join(dir, "process.json")
		if err := os.WriteFile(pj, processJSON, 0o600); err != nil {
			return fail(err)
		}
		args = append(args, "--process", pj)
	}
	stderrFile, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		return fail(err)
	}
	defer stderrFile.Close()

	var (
		console *consoleSocket
		pipes   *pipeIO
	)
	if stdio.Terminal {
		console, err = listenConsole(filepath.Join(dir, "console.sock"))
		if err != nil {
			return fail(err)
		}
		defer console.Close()
		args = append(args, "--console-socket", console.path)
	} else {
		pipes, err = newPipeIO(stdio)
		if err != nil {
			return fail(err)
		}
	}
	args = append(args, id)

	cmd := exec.CommandContext(ctx, r.binary, r.globalArgs(logPath, args)...)
	cmd.Stderr = stderrFile
	if pipes != nil {
		// The container inherits these: a nil one is /dev/null. The runtime's
		// own errors are in its log.
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pipes.childIn, pipes.childOut, pipes.childErr
		if pipes.childIn == nil {
			cmd.Stdin = nil
		}
		if pipes.childOut == nil {
			cmd.Stdout = nil
		}
		if pipes.childErr == nil {
			cmd.Stderr = nil
		}
	}
	runErr := r.runCmd(cmd)
	if pipes != nil {
		pipes.closeChild()
	}
	if runErr != nil {
		r.reapLeftovers()
		var printed []byte
		if pipes != nil {
			printed = pipes.readPending()
			pipes.close()
		}
		if b, err := os.ReadFile(stderrFile.Name()); err == nil {
			printed = append(printed, b...)
		}
		return r.runtimeError(verb, id, logPath, printed, runErr)
	}

	pid, err := readPid(pidFile)
	if err != nil {
		if pipes != nil {
			pipes.close()
		}
		return fail(err)
	}
	own(pid)
	p.settle = func() error { return r.settle(pid) }
	var out outputIO = pipes
	if console != nil {
		master, err := console.receive(consoleTimeout)
		if err != nil {
			_ = unix.Kill(pid, unix.SIGKILL)
			if r.settle(pid) == nil {
				reap(pid)
			}
			disown(pid)
			return fail(err)
		}
		out = newTerminalIO(master, stdio)
	}
	p.start(pid, out, stdio)
	return nil
}

func readPid(pidFile string) (int, error) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("read pid file: bad pid %q", b)
	}
	return pid, nil
}

// reap collects pid's exit status, retrying on EINTR.
func reap(pid int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return ws, err
	}
}

// outputIO is the copying set up for a started process.
type outputIO interface {
	// start begins copying between the process and stdio.
	start(stdio runtime.IO)
	// drain waits for output to be copied, at most timeout once the process
	// has exited, then releases everything.
	drain(timeout time.Duration)
	// resize sets the terminal size; an error without a terminal.
	resize(size runtime.ConsoleSize) error
}

// readerOnly hides a reader's other methods so io.Copy reads through the
// poller (honouring deadlines) instead of splicing.
type readerOnly struct{ io.Reader }

// pipeIO wires a process without a terminal through pipes.
type pipeIO struct {
	stdinW, stdoutR, stderrR    *os.File // our ends
	childIn, childOut, childErr *os.File // the runtime's ends
	wg                          sync.WaitGroup
}

func newPipeIO(stdio runtime.IO) (*pipeIO, error) {
	p := &pipeIO{}
	var err error
	if stdio.Stdin != nil {
		if p.childIn, p.stdinW, err = os.Pipe(); err != nil {
			return nil, err
		}
	}
	if stdio.Stdout != nil {
		if p.stdoutR, p.childOut, err = os.Pipe(); err != nil {
			p.close()
			return nil, err
		}
	}
	if stdio.Stderr != nil {
		if p.stderrR, p.childErr, err = os.Pipe(); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			_ = f.Close()
		}
	}
}

func (p *pipeIO) closeChild() { closeAll(p.childIn, p.childOut, p.childErr) }

func (p *pipeIO) close() {
	p.closeChild()
	closeAll(p.stdinW, p.stdoutR, p.stderrR)
}

// readPending returns what is already buffered in the output pipes, without
// blocking: after a failed invocation, what the runtime printed.
func (p *pipeIO) readPending() []byte {
	var out []byte
	for _, f := range []*os.File{p.stderrR, p.stdoutR} {
		if f == nil {
			continue
		}
		_ = f.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		b, _ := io.ReadAll(readerOnly{f})
		out = append(out, b...)
	}
	return out
}

func (p *pipeIO) start(stdio runtime.IO) {
	if p.stdinW != nil {
		go func() {
			_, _ = io.Copy(p.stdinW, stdio.Stdin)
			_ = p.stdinW.Close() // EOF for the process
		}()
	}
	for _, c := range []struct {
		r *os.File
		w io.Writer
	}{{p.stdoutR, stdio.Stdout}, {p.stderrR, stdio.Stderr}} {
		if c.r == nil {
			continue
		}
		p.wg.Go(func() { _, _ = io.Copy(c.w, readerOnly{c.r}) })
	}
}

func (p *pipeIO) drain(timeout time.Duration) {
	if !waitTimeout(&p.wg, timeout) {
		// A descendant still holds the pipes: stop reading now.
		for _, f := range []*os.File{p.stdoutR, p.stderrR} {
			if f != nil {
				_ = f.SetReadDeadline(time.Now())
			}
		}
		p.wg.Wait()
	}
	closeAll(p.stdinW, p.stdoutR, p.stderrR)
}

func (p *pipeIO) resize(runtime.ConsoleSize) error {
	return fmt.Errorf("resize: process has no terminal: %w", errdefs.ErrInvalidArgument)
}

// waitTimeout waits for wg, at most timeout; it reports whether wg finished.
func waitTimeout(wg *sync.WaitGroup, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// terminalIO wires a process through its pty master.
type terminalIO struct {
	mu     sync.Mutex
	master *os.File // nil once released
	wg     sync.WaitGroup
}

func newTerminalIO(master *os.File, stdio runtime.IO) *terminalIO {
	t := &terminalIO{master: master}
	if stdio.Size != nil {
		_ = t.resize(*stdio.Size)
	}
	return t
}

func (t *terminalIO) start(stdio runtime.IO) {
	if stdio.Stdin != nil {
		go func() { _, _ = io.Copy(t.master, stdio.Stdin) }()
	}
	w := stdio.Stdout
	if w == nil {
		w = io.Discard // the process would block on a full pty otherwise
	}
	// Reading ends with EIO once the process and its descendants have closed
	// the terminal.
	t.wg.Go(func() { _, _ = io.Copy(w, readerOnly{t.master}) })
}

func (t *terminalIO) drain(timeout time.Duration) {
	if !waitTimeout(&t.wg, timeout) {
		_ = t.master.SetReadDeadline(time.Now())
		t.wg.Wait()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	_ = t.master.Close()
	t.master = nil
}

func (t *terminalIO) resize(size runtime.ConsoleSize) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.master == nil {
		return fmt.Errorf("resize: terminal closed: %w", errdefs.ErrConflict)
	}
	ws := &unix.Winsize{Row: size.Height, Col: size.Width}
	if err := unix.IoctlSetWinsize(int(t.master.Fd()), unix.TIOCSWINSZ, ws); err != nil {
		return fmt.Errorf("resize: %w", err)
	}
	return nil
}

// process is a container's init or exec process, started by launch.
type process struct {
	id    string // container ID, or ID/execID
	drain time.Duration

	mu     sync.Mutex
	pid    int
	pidfd  int // -1 when none or released
	out    outputIO
	exited bool
	// settle, when set, runs before waiting: until the process is the
	// caller's child, wait4 fails (see adopt.go).
	settle func() error

	once   sync.Once
	done   chan struct{}
	status runtime.ExitStatus
	err    error
}

func newProcess(id string, drain time.Duration) *process {
	return &process{id: id, drain: drain, pidfd: -1, done: make(chan struct{})}
}

// start takes over a started process: output copying and reaping.
func (p *process) start(pid int, out outputIO, stdio runtime.IO) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		pidfd = -1
	}
	p.mu.Lock()
	p.pid, p.pidfd, p.out = pid, pidfd, out
	p.mu.Unlock()
	out.start(stdio)
	go p.reap()
}

func (p *process) reap() {
	var (
		ws  unix.WaitStatus
		err error
	)
	if p.settle != nil {
		err = p.settle()
	}
	if err == nil {
		ws, err = reap(p.pid)
	}
	exitedAt := time.Now()
	disown(p.pid)
	p.mu.Lock()
	p.exited = true
	if p.pidfd >= 0 {
		_ = unix.Close(p.pidfd)
		p.pidfd = -1
	}
	p.mu.Unlock()
	p.out.drain(p.drain)
	if err != nil {
		// ECHILD: not our child, i.e. the caller is no subreaper or reaped it.
		p.finish(runtime.ExitStatus{}, fmt.Errorf("wait %s pid %d: %w", p.id, p.pid, err))
		return
	}
	st := runtime.ExitStatus{Code: ws.ExitStatus(), ExitedAt: exitedAt}
	if ws.Signaled() {
		st.Signal = ws.Signal()
		st.Code = 128 + int(st.Signal)
	}
	p.finish(st, nil)
}

func (p *process) finish(st runtime.ExitStatus, err error) {
	p.once.Do(func() {
		p.status, p.err = st, err
		close(p.done)
	})
}

// fail ends a process that never started.
func (p *process) fail(err error) { p.finish(runtime.ExitStatus{}, err) }

// Pid returns the process's host PID; 0 before Start.
func (p *process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// Wait blocks until the process has exited and its output has been copied.
func (p *process) Wait(ctx context.Context) (runtime.ExitStatus, error) {
	select {
	case <-p.done:
		return p.status, p.err
	case <-ctx.Done():
		return runtime.ExitStatus{}, fmt.Errorf("wait %s: %w", p.id, ctx.Err())
	}
}

// Signal sends sig to the process through a pidfd (no PID reuse race); a
// process not started or already exited is an error wrapping
// errdefs.ErrConflict.
func (p *process) Signal(_ context.Context, sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.pid == 0:
		return fmt.Errorf("signal %s: not started: %w", p.id, errdefs.ErrConflict)
	case p.exited:
		return fmt.Errorf("signal %s: %w: %w", p.id, errNotRunning, errdefs.ErrConflict)
	}
	var err error
	if p.pidfd >= 0 {
		err = unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	} else {
		// Safe from reuse: the PID stays ours until reap collects it.
		err = unix.Kill(p.pid, sig)
	}
	if err != nil {
		return fmt.Errorf("signal %s pid %d: %w", p.id, p.pid, err)
	}
	return nil
}

// Resize changes the process's terminal size.
func (p *process) Resize(_ context.Context, size runtime.ConsoleSize) error {
	p.mu.Lock()
	out := p.out
	p.mu.Unlock()
	if out == nil {
		return fmt.Errorf("resize %s: not started: %w", p.id, errdefs.ErrConflict)
	}
	if err := out.resize(size); err != nil {
		return fmt.Errorf("resize %s: %w", p.id, err)
	}
	return nil
}
