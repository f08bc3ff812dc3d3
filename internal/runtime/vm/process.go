package vm

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"syscall"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

// process is a guest process of a Machine this process owns.
type process struct {
	m      *Machine
	id     uint32
	execID string
	spec   agentproto.Process
	stdio  runtime.IO

	startOnce sync.Once
	started   chan struct{}
	startErr  error

	doneOnce sync.Once
	done     chan struct{}
	status   runtime.ExitStatus
	err      error
}

var _ runtime.Process = (*process)(nil)

func newProcess(m *Machine, id uint32, execID string, spec agentproto.Process, stdio runtime.IO) *process {
	return &process{m: m, id: id, execID: execID, spec: spec, stdio: stdio,
		started: make(chan struct{}), done: make(chan struct{})}
}

func (p *process) name() string {
	if p.execID != "" {
		return strconv.Quote(p.execID)
	}
	return "init"
}

func (p *process) markStarted(err error) {
	p.startOnce.Do(func() {
		p.startErr = err
		close(p.started)
	})
}

func (p *process) finish(st runtime.ExitStatus, err error) {
	p.doneOnce.Do(func() {
		p.status, p.err = st, err
		close(p.done)
	})
}

// Pid is QEMU's PID for init; exec processes have no host PID.
func (p *process) Pid() int {
	if p.id != agentproto.InitID || p.m.qemu == nil {
		return 0
	}
	return p.m.qemu.Process.Pid
}

// Wait returns the guest process's exit status, after its output.
func (p *process) Wait(ctx context.Context) (runtime.ExitStatus, error) {
	select {
	case <-p.done:
		return p.status, p.err
	case <-ctx.Done():
		return runtime.ExitStatus{}, ctx.Err()
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal delivers sig to the guest process.
// For init it is Runtime.Kill: before Start, a signal ends the VM.
func (p *process) Signal(ctx context.Context, sig syscall.Signal) error {
	if p == p.m.init {
		return p.m.kill(sig, false)
	}
	return p.signal(sig, false)
}

func (p *process) signal(sig syscall.Signal, all bool) error {
	if p.exited() {
		return fmt.Errorf("vm %s: signal process %s: not running: %w", p.m.ID, p.name(), errdefs.ErrConflict)
	}
	if err := p.m.w.WriteJSON(agentproto.TypeSignal, p.id, agentproto.Signal{Signal: int(sig), All: all}); err != nil {
		return fmt.Errorf("vm %s: signal process %s: %w", p.m.ID, p.name(), err)
	}
	return nil
}

// Resize changes the guest process's terminal size.
func (p *process) Resize(ctx context.Context, size runtime.ConsoleSize) error {
	if !p.spec.Terminal {
		return fmt.Errorf("vm %s: resize process %s: it has no terminal: %w", p.m.ID, p.name(), errdefs.ErrInvalidArgument)
	}
	if err := p.m.w.WriteJSON(agentproto.TypeResize, p.id, agentproto.Resize{Width: size.Width, Height: size.Height}); err != nil {
		return fmt.Errorf("vm %s: resize process %s: %w", p.m.ID, p.name(), err)
	}
	return nil
}

// run asks the agent to start p and waits for the answer; then stdin flows.
func (m *Machine) run(ctx context.Context, p *process) error {
	m.mu.Lock()
	m.procs[p.id] = p
	m.mu.Unlock()
	if err := m.w.WriteJSON(agentproto.TypeStart, p.id, p.spec); err != nil {
		m.processExited(p, runtime.ExitStatus{Code: -1}, err)
		return fmt.Errorf("vm %s: start process %s: %w", m.ID, p.name(), err)
	}
	select {
	case <-p.started:
	case <-ctx.Done():
		return ctx.Err()
	}
	if p.startErr != nil {
		return p.startErr
	}
	if p.stdio.Stdin != nil {
		go func() {
			_, _ = io.Copy(m.w.StreamWriter(agentproto.TypeStdin, p.id), p.stdio.Stdin)
			_ = m.w.Write(agentproto.TypeStdinClose, p.id, nil)
		}()
	}
	return nil
}

func shapeOf(stdio runtime.IO) ioShape {
	s := ioShape{stdin: stdio.Stdin != nil, terminal: stdio.Terminal}
	if stdio.Size != nil {
		s.width, s.height = stdio.Size.Width, stdio.Size.Height
	}
	return s
}
