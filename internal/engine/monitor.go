package engine

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/berthdev/berth/internal/attach"
	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/logs"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/snapshot"
	"github.com/berthdev/berth/internal/spec"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// syncMessage is what a monitor tells the CLI that started it, once.
type syncMessage struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
	// Code is the exit code the CLI should use when Error is set.
	Code int `json:"code,omitempty"`
}

// monitor is the state of one running workload inside its monitor process.
type monitor struct {
	e    *Engine
	c    *state.Container
	rt   runtime.Runtime
	init runtime.Process
	spec *specs.Spec

	mu      sync.Mutex
	clients map[*attach.FrameWriter]struct{}
	waiters []*attach.FrameWriter
	stdinW  io.WriteCloser
	exited  bool
	execSeq int
	logs    *logStreams
	size    *runtime.ConsoleSize
}

// RunMonitor is the body of the hidden `berth monitor ID` command: it mounts
// the workload's root filesystem, starts it through its runtime backend,
// serves attach/exec/kill/wait on a unix socket, records the exit status and
// cleans up. syncFile receives one JSON line once the workload runs (or
// failed); attachFile, when not nil, is a connection from the starting CLI
// that is served like any other client (so no output is lost before it
// could connect).
func (e *Engine) RunMonitor(ctx context.Context, id string, syncFile, attachFile *os.File) error {
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGTTOU, syscall.SIGTTIN)
	trace("monitor: begin")
	c, err := e.db.Get(ctx, id)
	if err != nil {
		return reportSync(syncFile, err)
	}
	m := &monitor{e: e, c: c, clients: map[*attach.FrameWriter]struct{}{}}
	// The starting CLI's attach request comes first: its terminal size must
	// be the process's from its first instruction.
	var first net.Conn
	var firstReq attach.Request
	if attachFile != nil {
		if conn, err := net.FileConn(attachFile); err == nil {
			if attach.ReadJSONLine(conn, &firstReq) == nil {
				first = conn
				if firstReq.Width > 0 && firstReq.Height > 0 {
					m.size = &runtime.ConsoleSize{Width: firstReq.Width, Height: firstReq.Height}
				}
			} else {
				conn.Close()
			}
		}
		attachFile.Close()
	}
	if err := m.start(ctx); err != nil {
		m.cleanup(context.Background())
		code := exitCodeFor(err)
		now := time.Now().UTC()
		_, _ = e.db.Update(context.Background(), id, func(c *state.Container) error {
			c.State = state.State{Status: state.StatusExited, ExitCode: code, Error: err.Error(), FinishedAt: now, StartedAt: now, RestartCount: c.State.RestartCount}
			return nil
		})
		if c.Config.AutoRemove {
			_ = e.removeFiles(context.Background(), c, false)
		}
		return reportSync(syncFile, err)
	}
	// Terminating the monitor politely forwards the signal to the workload.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		for range sigs {
			_ = m.init.Signal(context.Background(), syscall.SIGTERM)
		}
	}()

	ln, err := listenUnix(e.socketPath(id))
	if err != nil {
		m.cleanup(context.Background())
		return reportSync(syncFile, fmt.Errorf("listen on the monitor socket of %s: %w", c.Name, err))
	} else {
		defer ln.Close()
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				go m.serve(conn)
			}
		}()
	}
	if first != nil {
		go m.serveRequest(first, firstReq)
	}
	trace("monitor: created")
	if err := m.e.rtStart(ctx, m); err != nil {
		m.cleanup(context.Background())
		return reportSync(syncFile, err)
	}
	_ = reportSync(syncFile, nil, m.init.Pid())
	trace("monitor: started+synced")

	st, werr := m.init.Wait(context.Background())
	trace("monitor: exited")
	msg := attach.ExitMessage{Code: st.Code, Signal: int(st.Signal)}
	if werr != nil {
		msg.Error = werr.Error()
		if msg.Code == 0 {
			msg.Code = 255
		}
	}
	if st.ExitedAt.IsZero() {
		st.ExitedAt = time.Now().UTC()
	}
	m.mu.Lock()
	m.exited = true
	if m.stdinW != nil {
		m.stdinW.Close()
	}
	m.mu.Unlock()
	m.closeLog()
	if c.Config.AutoRemove {
		// Straight to removal: nobody needs the exit recorded first.
		// The runtime's delete runs alongside the unmount and the removal
		// of the files and record: none depends on another.
		wait := m.cleanupAsync(context.Background())
		_ = e.removeFiles(context.Background(), c, true)
		trace("monitor: removed")
		// Nothing of the workload is visible any more (no record, no
		// mount): clients may go while the runtime finishes deleting its
		// own state, which no later workload can collide with (the ID is
		// never reused) and which system prune reclaims if we die first.
		m.sendExit(msg)
		wait()
		trace("monitor: cleaned up")
		return nil
	} else {
		_, _ = e.db.Update(context.Background(), id, func(c *state.Container) error {
			c.State.Status = state.StatusExited
			c.State.ExitCode = msg.Code
			c.State.Error = msg.Error
			c.State.FinishedAt = st.ExitedAt
			c.State.Pid, c.State.PidStart = 0, 0
			c.State.MonitorPid, c.State.MonitorStart = 0, 0
			return nil
		})
		m.cleanup(context.Background())
	}
	trace("monitor: cleaned up")
	m.sendExit(msg)
	return nil
}

// sendExit gives every attached client and waiter the exit status.
func (m *monitor) sendExit(msg attach.ExitMessage) {
	payload, _ := json.Marshal(msg)
	m.mu.Lock()
	for fw := range m.clients {
		_ = fw.Write(attach.Exit, payload)
	}
	for _, fw := range m.waiters {
		_ = fw.Write(attach.Exit, payload)
	}
	m.mu.Unlock()
}

// logStreams are the log file's writers, closed once the workload ends.
type logStreams struct {
	w              *logs.Writer
	stdout, stderr io.WriteCloser
}

func (m *monitor) closeLog() {
	m.mu.Lock()
	l := m.logs
	m.logs = nil
	m.mu.Unlock()
	if l != nil {
		l.stdout.Close()
		l.stderr.Close()
		l.w.Close()
	}
}

// start mounts the root filesystem, writes the bundle and creates the
// workload in its backend.
func (m *monitor) start(ctx context.Context) error {
	e, c := m.e, m.c
	mounts := c.RootfsMounts
	rootfs := e.rootfsDir(c.ID)
	if err := os.MkdirAll(rootfs, 0o711); err != nil {
		return err
	}
	_ = snapshot.Unmount(rootfs) // a stale mount from a killed monitor
	if err := snapshot.MountAll(mounts, rootfs); err != nil {
		return fmt.Errorf("mount root filesystem of %s: %w", c.Name, err)
	}
	trace("monitor: mounted")
	if err := e.setupNetwork(ctx, c); err != nil { // network.go
		return err
	}
	s, err := e.buildSpec(ctx, c, rootfs, m.size)
	trace("monitor: spec built")
	if err != nil {
		return err
	}
	m.spec = s
	if m.rt, err = e.backend(c); err != nil {
		return err
	}
	if err := writeBundleSpec(m.rt, e.bundleDir(c.ID), s); err != nil {
		return fmt.Errorf("write bundle of %s: %w", c.Name, err)
	}
	lw, err := logs.Create(e.LogPath(c.ID))
	if err != nil {
		return err
	}
	ls := &logStreams{w: lw, stdout: lw.Stream("stdout"), stderr: lw.Stream("stderr")}
	m.logs = ls
	stdio := runtime.IO{
		Stdout:   &fanout{m: m, log: ls.stdout, t: attach.Stdout},
		Stderr:   &fanout{m: m, log: ls.stderr, t: attach.Stderr},
		Terminal: c.Config.Tty,
		Size:     m.size,
	}
	if c.Config.OpenStdin {
		r, w := io.Pipe()
		stdio.Stdin = r
		m.stdinW = w
	}
	_ = os.Remove(e.socketPath(c.ID))
	m.init, err = m.rt.Create(ctx, c.ID, e.bundleDir(c.ID), stdio)
	if err != nil {
		return err
	}
	return nil
}

// rtStart runs the workload's process and records that it runs.
func (e *Engine) rtStart(ctx context.Context, m *monitor) error {
	trace("monitor: rt.Start")
	trace("monitor: rt.Start")
	if err := m.rt.Start(ctx, m.c.ID); err != nil {
		code := exitCodeFor(err)
		now := time.Now().UTC()
		_, _ = e.db.Update(context.Background(), m.c.ID, func(c *state.Container) error {
			c.State = state.State{Status: state.StatusExited, ExitCode: code, Error: err.Error(), FinishedAt: now, StartedAt: now, RestartCount: c.State.RestartCount}
			return nil
		})
		if m.c.Config.AutoRemove {
			_ = e.removeFiles(context.Background(), m.c, false)
		}
		return err
	}
	pid := m.init.Pid()
	pstart, _ := procStart(pid)
	mstart, _ := procStart(os.Getpid())
	_, err := e.db.Update(ctx, m.c.ID, func(c *state.Container) error {
		restarts := c.State.RestartCount
		if !c.State.StartedAt.IsZero() {
			restarts++
		}
		c.State = state.State{
			Status: state.StatusRunning, Pid: pid, PidStart: pstart,
			MonitorPid: os.Getpid(), MonitorStart: mstart,
			StartedAt: time.Now().UTC(), RestartCount: restarts,
		}
		return nil
	})
	return err
}

// cleanup releases what the run held: the backend's resources, the root
// filesystem mount and the socket. It is idempotent.
func (m *monitor) cleanup(ctx context.Context) { m.cleanupAsync(ctx)() }

// cleanupAsync releases the run (unmount, network) and starts the
// runtime's delete beside it; the returned func waits for the delete.
func (m *monitor) cleanupAsync(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	if m.rt != nil {
		wg.Add(1)
		go func() { // independent of the unmount: do both at once
			defer wg.Done()
			_ = m.rt.Delete(ctx, m.c.ID, true)
			trace("monitor: runtime state deleted")
		}()
	}
	m.e.releaseRun(ctx, m.c)
	trace("monitor: run released")
	return wg.Wait
}

// releaseRun undoes what a run set up on the host; safe to call whatever is
// left, and from any process.
func (e *Engine) releaseRun(ctx context.Context, c *state.Container) {
	e.releaseNetwork(ctx, c) // network.go
	_ = snapshot.Unmount(e.rootfsDir(c.ID))
	_ = os.RemoveAll(e.runDir(c.ID))
}

func reportSync(f *os.File, err error, pid ...int) error {
	if f == nil {
		return err
	}
	msg := syncMessage{}
	if err != nil {
		msg.Error = err.Error()
		msg.Code = exitCodeFor(err)
	} else if len(pid) > 0 {
		msg.Pid = pid[0]
	}
	_ = json.NewEncoder(f).Encode(msg)
	f.Close()
	return err
}

// exitCodeFor maps a start failure to Docker's codes: 127 when the command
// does not exist, 126 when it cannot be run, 125 for berth's own errors.
func exitCodeFor(err error) int {
	var ce *CommandError
	switch {
	case errors.As(err, &ce) && errors.Is(err, errdefs.ErrNotFound):
		return 127
	case errors.As(err, &ce):
		return 126
	default:
		return 125
	}
}

// fanout copies a stream to the log and to every attached client.
type fanout struct {
	m   *monitor
	log io.Writer
	t   attach.FrameType
}

func (f *fanout) Write(p []byte) (int, error) {
	_, _ = f.log.Write(p)
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	for fw := range f.m.clients {
		if err := fw.Write(f.t, p); err != nil {
			delete(f.m.clients, fw)
		}
	}
	return len(p), nil
}

// serve handles one client connection.
func (m *monitor) serve(conn net.Conn) {
	var req attach.Request
	if err := attach.ReadJSONLine(conn, &req); err != nil {
		conn.Close()
		return
	}
	m.serveRequest(conn, req)
}

// serveRequest answers one request whose line has been read.
func (m *monitor) serveRequest(conn net.Conn, req attach.Request) {
	defer conn.Close()
	fw := attach.NewFrameWriter(conn)
	reply := func(r attach.Reply) { _ = attach.WriteJSONLine(conn, r) }
	switch req.Op {
	case attach.OpKill:
		if err := m.init.Signal(context.Background(), syscall.Signal(req.Signal)); err != nil {
			reply(attach.Reply{Error: err.Error()})
			return
		}
		reply(attach.Reply{})
	case attach.OpWait:
		m.mu.Lock()
		reply(attach.Reply{})
		m.waiters = append(m.waiters, fw)
		m.mu.Unlock()
		_, _ = io.Copy(io.Discard, conn) // hold until the client or we go away
	case attach.OpAttach:
		m.mu.Lock()
		if m.exited {
			m.mu.Unlock()
			reply(attach.Reply{Error: "container is not running"})
			return
		}
		reply(attach.Reply{Pid: m.init.Pid()})
		m.clients[fw] = struct{}{}
		stdin := m.stdinW
		m.mu.Unlock()
		if !req.Stdin {
			stdin = nil
		}
		if req.Width > 0 && req.Height > 0 {
			_ = m.init.Resize(context.Background(), runtime.ConsoleSize{Width: req.Width, Height: req.Height})
		}
		m.pump(conn, m.init, stdin)
		// A client that supplied stdin closes it when it goes, like Docker's StdinOnce.
		if stdin != nil {
			stdin.Close()
		}
		// Keep the connection until the Exit frame went out, unless the client left.
		m.mu.Lock()
		delete(m.clients, fw)
		m.mu.Unlock()
	case attach.OpExec:
		m.exec(conn, fw, req)
	default:
		reply(attach.Reply{Error: fmt.Sprintf("unknown request %q", req.Op)})
	}
}

// pump reads client frames (stdin, resize, signals) for process p until the
// client closes its side.
func (m *monitor) pump(conn net.Conn, p runtime.Process, stdin io.WriteCloser) {
	for {
		t, payload, err := attach.ReadFrame(conn)
		if err != nil {
			return
		}
		switch t {
		case attach.Stdin:
			if stdin != nil {
				_, _ = stdin.Write(payload)
			}
		case attach.StdinClose:
			if stdin != nil {
				stdin.Close()
			}
		case attach.Resize:
			if len(payload) == 4 {
				_ = p.Resize(context.Background(), runtime.ConsoleSize{Width: binary.BigEndian.Uint16(payload), Height: binary.BigEndian.Uint16(payload[2:])})
			}
		case attach.Signal:
			if len(payload) == 4 {
				_ = p.Signal(context.Background(), syscall.Signal(binary.BigEndian.Uint32(payload)))
			}
		}
	}
}

// exec runs a new process in the workload for one client.
func (m *monitor) exec(conn net.Conn, fw *attach.FrameWriter, req attach.Request) {
	reply := func(r attach.Reply) { _ = attach.WriteJSONLine(conn, r) }
	proc, err := m.execProcess(req)
	if err != nil {
		reply(attach.Reply{Error: err.Error(), Code: exitCodeFor(err)})
		return
	}
	m.mu.Lock()
	m.execSeq++
	execID := "exec" + strconv.Itoa(m.execSeq) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	m.mu.Unlock()
	// Output waits until the reply line is out: frames follow the reply.
	ready := make(chan struct{})
	stdio := runtime.IO{Stdout: gated{ready, fw.Stream(attach.Stdout)}, Stderr: gated{ready, fw.Stream(attach.Stderr)}, Terminal: proc.Terminal}
	if req.Width > 0 && req.Height > 0 {
		stdio.Size = &runtime.ConsoleSize{Width: req.Width, Height: req.Height}
	}
	var stdinW io.WriteCloser
	if req.Stdin {
		r, w := io.Pipe()
		stdio.Stdin, stdinW = r, w
	}
	p, err := m.rt.Exec(context.Background(), m.c.ID, execID, proc, stdio)
	if err != nil {
		reply(attach.Reply{Error: err.Error(), Code: 126})
		close(ready)
		return
	}
	reply(attach.Reply{Pid: p.Pid()})
	close(ready)
	go m.pump(conn, p, stdinW)
	st, werr := p.Wait(context.Background())
	msg := attach.ExitMessage{Code: st.Code, Signal: int(st.Signal)}
	if werr != nil {
		msg.Error = werr.Error()
	}
	payload, _ := json.Marshal(msg)
	_ = fw.Write(attach.Exit, payload)
}

// execProcess derives an exec's process from the init process: same
// capabilities, rlimits and security settings, with the request's args,
// environment, working directory, user and terminal.
func (m *monitor) execProcess(req attach.Request) (*specs.Process, error) {
	if req.Process == nil || len(req.Process.Args) == 0 {
		return nil, fmt.Errorf("exec needs a command: %w", errdefs.ErrInvalidArgument)
	}
	base := *m.spec.Process
	p := &base
	p.Args = req.Process.Args
	p.Env = append(append([]string{}, m.spec.Process.Env...), req.Process.Env...)
	p.Terminal = req.Process.Terminal
	p.ConsoleSize = nil
	if req.Process.Cwd != "" {
		p.Cwd = req.Process.Cwd
	}
	if u := req.Process.User.Username; u != "" {
		s := &specs.Spec{Process: p, Root: m.spec.Root}
		if err := spec.WithUser(m.spec.Root.Path, u)(context.Background(), s); err != nil {
			return nil, err
		}
		p.User.Username = ""
	}
	if err := spec.ResolveExecutable(m.spec.Root.Path, p.Args, p.Env); err != nil && !commandInMounts(m.c, p.Args, p.Env) { // volume.go
		return nil, &CommandError{Err: err}
	}
	return p, nil
}

// gated holds writes until ready is closed.
type gated struct {
	ready <-chan struct{}
	w     io.Writer
}

func (g gated) Write(p []byte) (int, error) {
	<-g.ready
	return g.w.Write(p)
}
