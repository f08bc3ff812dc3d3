package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

// The control socket (ctl.sock in the state directory) lets processes other
// than a VM's owner start, signal and exec in it: only the owner holds the
// agent connection (a virtio-serial port has one host side). It speaks
// agentproto framing: the client sends one request frame; the owner answers
// with a reply frame; for exec, the connection then carries that process's
// frames (id 1) in both directions, ending with its Exit.
const (
	typeRequest agentproto.Type = 100
	typeReply   agentproto.Type = 101
)

type ctlRequest struct {
	Op       string               `json:"op"` // start, kill, exec
	Signal   int                  `json:"signal,omitempty"`
	All      bool                 `json:"all,omitempty"`
	ExecID   string               `json:"execID,omitempty"`
	Process  *specs.Process       `json:"process,omitempty"`
	Stdin    bool                 `json:"stdin,omitempty"`
	Terminal bool                 `json:"terminal,omitempty"`
	Size     *runtime.ConsoleSize `json:"size,omitempty"`
}

type ctlReply struct {
	Error string `json:"error,omitempty"`
	Class string `json:"class,omitempty"`
	// Exit fields, in the Exit frame of an exec.
	Code   int `json:"code,omitempty"`
	Signal int `json:"signal,omitempty"`
}

var errClasses = []struct {
	name string
	err  error
}{
	{"not-found", errdefs.ErrNotFound}, {"exists", errdefs.ErrAlreadyExists},
	{"invalid", errdefs.ErrInvalidArgument}, {"conflict", errdefs.ErrConflict},
	{"unavailable", errdefs.ErrUnavailable}, {"corrupt", errdefs.ErrCorrupt},
}

func replyOf(err error) ctlReply {
	if err == nil {
		return ctlReply{}
	}
	r := ctlReply{Error: err.Error()}
	for _, c := range errClasses {
		if errors.Is(err, c.err) {
			r.Class = c.name
			break
		}
	}
	return r
}

// remoteError is an error the owner returned, with its class restored.
type remoteError struct {
	msg   string
	class error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.class }

func (r ctlReply) err() error {
	if r.Error == "" {
		return nil
	}
	e := &remoteError{msg: r.Error}
	for _, c := range errClasses {
		if c.name == r.Class {
			e.class = c.err
		}
	}
	return e
}

func (m *Machine) acceptControl(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go m.handleControl(c)
	}
}

func (m *Machine) handleControl(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	f, err := agentproto.ReadFrame(r)
	if err != nil || f.Type != typeRequest {
		return
	}
	w := agentproto.NewWriter(c)
	var req ctlRequest
	if err := f.Decode(&req); err != nil {
		_ = w.WriteJSON(typeReply, 0, replyOf(fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)))
		return
	}
	ctx := context.Background()
	switch req.Op {
	case "start":
		_ = w.WriteJSON(typeReply, 0, replyOf(m.startInit(ctx)))
	case "kill":
		_ = w.WriteJSON(typeReply, 0, replyOf(m.kill(syscall.Signal(req.Signal), req.All)))
	case "exec":
		m.serveExec(ctx, req, r, w)
	default:
		_ = w.WriteJSON(typeReply, 0, replyOf(fmt.Errorf("unknown control op %q: %w", req.Op, errdefs.ErrInvalidArgument)))
	}
}

// serveExec runs an exec for a remote client, relaying its frames.
func (m *Machine) serveExec(ctx context.Context, req ctlRequest, r io.Reader, w *agentproto.Writer) {
	stdio := runtime.IO{
		Stdout:   w.StreamWriter(agentproto.TypeStdout, agentproto.InitID),
		Stderr:   w.StreamWriter(agentproto.TypeStderr, agentproto.InitID),
		Terminal: req.Terminal,
		Size:     req.Size,
	}
	var stdinW *io.PipeWriter
	if req.Stdin {
		var pr *io.PipeReader
		pr, stdinW = io.Pipe()
		stdio.Stdin = pr
	}
	p, err := m.exec(ctx, req.ExecID, req.Process, stdio)
	_ = w.WriteJSON(typeReply, 0, replyOf(err))
	if err != nil {
		return
	}
	go func() {
		for {
			f, err := agentproto.ReadFrame(r)
			if err != nil {
				if stdinW != nil {
					stdinW.Close()
				}
				return // the client went away; the process keeps running
			}
			switch f.Type {
			case agentproto.TypeStdin:
				if stdinW != nil {
					_, _ = stdinW.Write(f.Payload)
				}
			case agentproto.TypeStdinClose:
				if stdinW != nil {
					stdinW.Close()
				}
			case agentproto.TypeSignal:
				var s agentproto.Signal
				if f.Decode(&s) == nil {
					_ = p.Signal(ctx, syscall.Signal(s.Signal))
				}
			case agentproto.TypeResize:
				var rs agentproto.Resize
				if f.Decode(&rs) == nil {
					_ = p.Resize(ctx, runtime.ConsoleSize{Width: rs.Width, Height: rs.Height})
				}
			}
		}
	}()
	st, err := p.Wait(ctx)
	rep := replyOf(err)
	rep.Code, rep.Signal = st.Code, int(st.Signal)
	_ = w.WriteJSON(agentproto.TypeExit, agentproto.InitID, rep)
}

func dialControl(ctx context.Context, dir, id string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(dir, ctlSocket))
	if err != nil {
		return nil, fmt.Errorf("vm %s: no owner to talk to (%v): %w", id, err, errdefs.ErrConflict)
	}
	return c, nil
}

// call sends one request to the owner of VM id and returns its reply, with
// the connection positioned after it.
func call(ctx context.Context, dir, id string, req ctlRequest) (net.Conn, *bufio.Reader, error) {
	c, err := dialControl(ctx, dir, id)
	if err != nil {
		return nil, nil, err
	}
	if err := agentproto.NewWriter(c).WriteJSON(typeRequest, 0, req); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("vm %s: %s: %w", id, req.Op, err)
	}
	r := bufio.NewReader(c)
	f, err := agentproto.ReadFrame(r)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("vm %s: %s: no reply: %w", id, req.Op, err)
	}
	var rep ctlReply
	if err := f.Decode(&rep); err != nil {
		c.Close()
		return nil, nil, err
	}
	if err := rep.err(); err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, r, nil
}

// remoteProcess is an exec run through another process's control socket.
type remoteProcess struct {
	id, execID string
	conn       net.Conn
	w          *agentproto.Writer
	terminal   bool
	done       chan struct{}
	status     runtime.ExitStatus
	err        error
}

var _ runtime.Process = (*remoteProcess)(nil)

func remoteExec(ctx context.Context, dir, id, execID string, proc *specs.Process, stdio runtime.IO) (*remoteProcess, error) {
	c, r, err := call(ctx, dir, id, ctlRequest{Op: "exec", ExecID: execID, Process: proc,
		Stdin: stdio.Stdin != nil, Terminal: stdio.Terminal, Size: stdio.Size})
	if err != nil {
		return nil, err
	}
	p := &remoteProcess{id: id, execID: execID, conn: c, w: agentproto.NewWriter(c),
		terminal: stdio.Terminal || proc.Terminal, done: make(chan struct{})}
	go p.read(r, stdio)
	if stdio.Stdin != nil {
		go func() {
			_, _ = io.Copy(p.w.StreamWriter(agentproto.TypeStdin, agentproto.InitID), stdio.Stdin)
			_ = p.w.Write(agentproto.TypeStdinClose, agentproto.InitID, nil)
		}()
	}
	return p, nil
}

func (p *remoteProcess) read(r io.Reader, stdio runtime.IO) {
	defer close(p.done)
	defer p.conn.Close()
	for {
		f, err := agentproto.ReadFrame(r)
		if err != nil {
			p.err = fmt.Errorf("vm %s: exec %s: lost the owner before the exit: %w", p.id, p.execID, errdefs.ErrUnavailable)
			return
		}
		switch f.Type {
		case agentproto.TypeStdout:
			if stdio.Stdout != nil {
				_, _ = stdio.Stdout.Write(f.Payload)
			}
		case agentproto.TypeStderr:
			w := stdio.Stderr
			if w == nil {
				w = stdio.Stdout
			}
			if w != nil {
				_, _ = w.Write(f.Payload)
			}
		case agentproto.TypeExit:
			var rep ctlReply
			_ = f.Decode(&rep)
			p.status = runtime.ExitStatus{Code: rep.Code, Signal: syscall.Signal(rep.Signal), ExitedAt: time.Now()}
			p.err = rep.err()
			return
		}
	}
}

func (p *remoteProcess) Pid() int { return 0 }

func (p *remoteProcess) Wait(ctx context.Context) (runtime.ExitStatus, error) {
	select {
	case <-p.done:
		return p.status, p.err
	case <-ctx.Done():
		return runtime.ExitStatus{}, ctx.Err()
	}
}

func (p *remoteProcess) Signal(ctx context.Context, sig syscall.Signal) error {
	return p.w.WriteJSON(agentproto.TypeSignal, agentproto.InitID, agentproto.Signal{Signal: int(sig)})
}

func (p *remoteProcess) Resize(ctx context.Context, size runtime.ConsoleSize) error {
	if !p.terminal {
		return fmt.Errorf("vm %s: resize exec %s: it has no terminal: %w", p.id, p.execID, errdefs.ErrInvalidArgument)
	}
	return p.w.WriteJSON(agentproto.TypeResize, agentproto.InitID, agentproto.Resize{Width: size.Width, Height: size.Height})
}
