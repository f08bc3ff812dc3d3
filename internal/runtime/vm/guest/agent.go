package guest

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

// How long init's exit waits for the host's acknowledgement, and how long
// the other processes get to report their exits, before the power-off.
const (
	ackTimeout   = 10 * time.Second
	drainTimeout = 2 * time.Second
)

type agent struct {
	portPath string
	port     *os.File
	w        *agentproto.Writer

	mu      sync.Mutex
	procs   map[uint32]*proc // by protocol id, until their Exit is sent
	byPid   map[int]*proc    // by guest PID, until reaped
	cgroup  string           // workload cgroup when a pids limit is set
	ready   bool
	initAck chan struct{}
	ackOnce sync.Once
}

func newAgent() *agent {
	return &agent{
		procs:   map[uint32]*proc{},
		byPid:   map[int]*proc{},
		initAck: make(chan struct{}),
	}
}

// reopenPort (re)opens the virtio-serial port read-write; a port allows
// only one open at a time, so reads and writes share the one file.
func (a *agent) reopenPort() error {
	if a.port != nil {
		a.port.Close()
	}
	f, err := os.OpenFile(a.portPath, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	a.port = f
	if a.w == nil {
		a.w = agentproto.NewWriter(f)
	} else {
		a.w.Reset(f)
	}
	return nil
}

// serve reads host frames forever, reopening the port whenever the host
// side goes away.
func (a *agent) serve() {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD)
	go a.reap(sigs)
	for {
		r := bufio.NewReaderSize(a.port, 64<<10)
		for {
			f, err := agentproto.ReadFrame(r)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					logf("read from host: %v", err)
				}
				break
			}
			a.handle(f)
		}
		time.Sleep(20 * time.Millisecond)
		for a.reopenPort() != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (a *agent) sendError(id uint32, err error, notFound bool) error {
	return a.w.WriteJSON(agentproto.TypeError, id, agentproto.Error{Message: err.Error(), NotFound: notFound})
}

func (a *agent) handle(f agentproto.Frame) {
	switch f.Type {
	case agentproto.TypeSetup:
		var s agentproto.Setup
		if err := f.Decode(&s); err != nil {
			_ = a.sendError(0, err, false)
			return
		}
		if a.ready {
			_ = a.sendError(0, errors.New("setup: guest is already set up"), false)
			return
		}
		if err := configureNetwork(s.Network); err != nil { // net.go
			logf("setup: %v", err)
			_ = a.sendError(0, err, false)
			return
		}
		kernel, err := a.setup(s)
		if err != nil {
			logf("setup: %v", err)
			_ = a.sendError(0, err, false)
			return
		}
		a.ready = true
		_ = a.w.WriteJSON(agentproto.TypeReady, 0, agentproto.Ready{Kernel: kernel})
	case agentproto.TypeStart:
		var spec agentproto.Process
		if err := f.Decode(&spec); err != nil {
			_ = a.sendError(f.ID, err, false)
			return
		}
		a.start(f.ID, spec)
	case agentproto.TypeStdin, agentproto.TypeStdinClose:
		p := a.lookup(f.ID)
		if p == nil || p.stdin == nil {
			return
		}
		if f.Type == agentproto.TypeStdin {
			p.stdin.push(f.Payload)
		} else {
			p.stdin.close()
		}
	case agentproto.TypeSignal:
		var s agentproto.Signal
		if err := f.Decode(&s); err != nil {
			logf("%v", err)
			return
		}
		a.signal(f.ID, s)
	case agentproto.TypeResize:
		var rs agentproto.Resize
		if err := f.Decode(&rs); err != nil {
			logf("%v", err)
			return
		}
		if p := a.lookup(f.ID); p != nil {
			p.resize(rs.Width, rs.Height)
		}
	case agentproto.TypeExitAck:
		if f.ID == agentproto.InitID {
			a.ackOnce.Do(func() { close(a.initAck) })
		}
	default:
		logf("ignoring %s frame for %d", f.Type, f.ID)
	}
}

func (a *agent) lookup(id uint32) *proc {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.procs[id]
}

func (a *agent) signal(id uint32, s agentproto.Signal) {
	if s.All {
		if err := unix.Kill(-1, unix.Signal(s.Signal)); err != nil && !errors.Is(err, unix.ESRCH) {
			logf("signal all with %d: %v", s.Signal, err)
		}
		return
	}
	a.mu.Lock()
	p := a.procs[id]
	pid := 0
	if p != nil && !p.reaped {
		pid = p.pid
	}
	a.mu.Unlock()
	if pid == 0 {
		return
	}
	if err := unix.Kill(pid, unix.Signal(s.Signal)); err != nil && !errors.Is(err, unix.ESRCH) {
		logf("signal process %d (pid %d) with %d: %v", id, pid, s.Signal, err)
	}
}

// reap collects every child that ends (PID 1 inherits all orphans) and
// finishes the ones that are workload processes.
func (a *agent) reap(sigs <-chan os.Signal) {
	for range sigs {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || pid <= 0 {
				break
			}
			a.mu.Lock()
			p := a.byPid[pid]
			delete(a.byPid, pid)
			if p != nil {
				p.reaped = true
			}
			a.mu.Unlock()
			if p != nil {
				go a.finish(p, ws)
			}
		}
	}
}

// finish reports a reaped process's exit once its output is drained; for
// init it then tears the guest down.
func (a *agent) finish(p *proc, ws unix.WaitStatus) {
	<-p.startDone
	isInit := p.id == agentproto.InitID
	if isInit {
		// Like the end of a PID namespace: everything else dies with init,
		// which also closes the pipes they inherited.
		_ = unix.Kill(-1, unix.SIGKILL)
	}
	p.outputs.Wait()
	p.closeParentEnds()
	exit := agentproto.Exit{Code: ws.ExitStatus()}
	if ws.Signaled() {
		exit.Signal = int(ws.Signal())
		exit.Code = 128 + exit.Signal
	}
	if !p.startFailed || isInit {
		if err := a.w.WriteJSON(agentproto.TypeExit, p.id, exit); err != nil {
			logf("report exit of %d: %v", p.id, err)
		}
	}
	a.mu.Lock()
	delete(a.procs, p.id)
	a.mu.Unlock()
	if !isInit {
		return
	}
	deadline := time.Now().Add(drainTimeout)
	for time.Now().Before(deadline) {
		a.mu.Lock()
		n := len(a.procs)
		a.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-a.initAck:
	case <-time.After(ackTimeout):
		logf("no acknowledgement of init's exit from the host after %s", ackTimeout)
	}
	powerOff()
}
