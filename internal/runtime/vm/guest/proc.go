package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/creack/pty"

	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

// proc is a workload process the agent started.
type proc struct {
	id  uint32
	pid int

	stdin   *queue
	ptm     *os.File   // terminal master, with a terminal
	parents []*os.File // our ends of the stdio pipes
	outputs sync.WaitGroup

	startDone   chan struct{} // closed once startFailed is known
	startFailed bool
	reaped      bool // guarded by agent.mu
}

func (p *proc) resize(w, h uint16) {
	if p.ptm == nil {
		return
	}
	if err := pty.Setsize(p.ptm, &pty.Winsize{Cols: w, Rows: h}); err != nil {
		logf("resize terminal of %d: %v", p.id, err)
	}
}

func (p *proc) closeParentEnds() {
	for _, f := range p.parents {
		f.Close()
	}
}

// start runs spec as process id through the exec helper and answers
// Started or Error.
func (a *agent) start(id uint32, spec agentproto.Process) {
	if !a.ready {
		_ = a.sendError(id, errors.New("start: guest is not set up"), false)
		return
	}
	if a.lookup(id) != nil {
		_ = a.sendError(id, fmt.Errorf("start: process %d exists", id), false)
		return
	}
	if len(spec.Args) == 0 {
		_ = a.sendError(id, errors.New("start: no args"), false)
		return
	}
	p := &proc{id: id, startDone: make(chan struct{})}
	child, err := p.openStdio(a, spec)
	if err != nil {
		_ = a.sendError(id, fmt.Errorf("start process %d: %w", id, err), false)
		return
	}
	closeChild := func() {
		for _, f := range child {
			f.Close() // a terminal's one pts is closed once; later Closes are no-ops
		}
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeChild()
		p.closeParentEnds()
		_ = a.sendError(id, fmt.Errorf("start process %d: %w", id, err), false)
		return
	}
	cfg, _ := json.Marshal(helperConfig{Process: spec, Cgroup: a.cgroup})
	attr := &syscall.ProcAttr{
		Env:   []string{helperEnv + "=" + string(cfg)},
		Files: []uintptr{child[0].Fd(), child[1].Fd(), child[2].Fd(), errW.Fd()},
		Sys:   &syscall.SysProcAttr{Setsid: true, Setctty: spec.Terminal, Ctty: 0},
	}
	a.mu.Lock()
	pid, err := syscall.ForkExec("/proc/self/exe", []string{"berth-agent", HelperArg}, attr)
	if err == nil {
		p.pid = pid
		a.byPid[pid] = p
		a.procs[id] = p
	}
	a.mu.Unlock()
	closeChild()
	errW.Close()
	if err != nil {
		errR.Close()
		p.closeParentEnds()
		_ = a.sendError(id, fmt.Errorf("start process %d: fork helper: %w", id, err), false)
		return
	}
	p.relayOutput(a)
	msg, _ := io.ReadAll(errR)
	errR.Close()
	if len(msg) > 0 {
		var e agentproto.Error
		if json.Unmarshal(msg, &e) != nil {
			e.Message = string(msg)
		}
		p.startFailed = true
		close(p.startDone)
		_ = a.w.WriteJSON(agentproto.TypeError, id, e)
		return
	}
	close(p.startDone)
	_ = a.w.WriteJSON(agentproto.TypeStarted, id, agentproto.Started{Pid: pid})
	if p.stdin != nil {
		go p.stdin.drainTo(p.stdinWriter(), id)
	}
}

// openStdio makes the child's stdin, stdout, stderr and keeps our ends.
func (p *proc) openStdio(a *agent, spec agentproto.Process) ([3]*os.File, error) {
	var child [3]*os.File
	if spec.Terminal {
		ptm, pts, err := pty.Open()
		if err != nil {
			return child, fmt.Errorf("open pty: %w", err)
		}
		if spec.Width > 0 && spec.Height > 0 {
			_ = pty.Setsize(ptm, &pty.Winsize{Cols: spec.Width, Rows: spec.Height})
		}
		p.ptm = ptm
		p.parents = append(p.parents, ptm)
		if spec.Stdin {
			p.stdin = newQueue()
		}
		child = [3]*os.File{pts, pts, pts}
		return child, nil
	}
	var err error
	if spec.Stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return child, err
		}
		child[0] = r
		p.parents = append(p.parents, w)
		p.stdin = newQueue()
	} else if child[0], err = os.Open("/dev/null"); err != nil {
		return child, err
	}
	for i := 1; i <= 2; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			return child, err
		}
		child[i] = w
		p.parents = append(p.parents, r)
	}
	return child, nil
}

func (p *proc) stdinWriter() io.WriteCloser {
	if p.ptm != nil {
		return nopCloser{p.ptm}
	}
	return p.parents[0]
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// relayOutput copies the process's output to the host until EOF.
func (p *proc) relayOutput(a *agent) {
	copyTo := func(t agentproto.Type, r io.Reader) {
		p.outputs.Add(1)
		go func() {
			defer p.outputs.Done()
			buf := make([]byte, 32<<10)
			w := a.w.StreamWriter(t, p.id)
			for {
				n, err := r.Read(buf)
				if n > 0 {
					if _, werr := w.Write(buf[:n]); werr != nil {
						logf("relay output of %d: %v", p.id, werr)
					}
				}
				if err != nil { // EOF, or EIO once a terminal's last slave closed
					return
				}
			}
		}()
	}
	if p.ptm != nil {
		copyTo(agentproto.TypeStdout, p.ptm)
		return
	}
	n := len(p.parents)
	copyTo(agentproto.TypeStdout, p.parents[n-2])
	copyTo(agentproto.TypeStderr, p.parents[n-1])
}

// queue holds stdin data from the host until the process reads it, so a
// process that does not read never stalls the agent's frame loop.
type queue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	bufs   [][]byte
	closed bool
}

func newQueue() *queue {
	q := &queue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *queue) push(b []byte) {
	q.mu.Lock()
	if !q.closed {
		q.bufs = append(q.bufs, b)
	}
	q.mu.Unlock()
	q.cond.Signal()
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Signal()
}

// drainTo writes queued data to w until the queue is closed, then closes w
// (for a terminal it sends EOF, ^D, instead).
func (q *queue) drainTo(w io.WriteCloser, id uint32) {
	broken := false
	for {
		q.mu.Lock()
		for len(q.bufs) == 0 && !q.closed {
			q.cond.Wait()
		}
		if len(q.bufs) == 0 && q.closed {
			q.mu.Unlock()
			break
		}
		b := q.bufs[0]
		q.bufs = q.bufs[1:]
		q.mu.Unlock()
		if !broken {
			if _, err := w.Write(b); err != nil {
				broken = true // the process closed stdin or ended; drop the rest
			}
		}
	}
	if nc, ok := w.(nopCloser); ok {
		_, _ = nc.Write([]byte{4})
		return
	}
	if err := w.Close(); err != nil {
		logf("close stdin of %d: %v", id, err)
	}
}
