package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
	"github.com/berthdev/berth/internal/runtime/vm/qmp"
)

// Runtime runs workloads in QEMU microVMs. VMs this process created are
// driven directly; others (created by another process with the same state
// dir) through their owner's control socket, or, for State and Delete,
// through the state directory alone.
type Runtime struct {
	o options

	mu  sync.Mutex
	vms map[string]*Machine

	accelMu sync.Mutex
	accel   string
}

var _ runtime.Runtime = (*Runtime)(nil)

// New returns a Runtime; see the With* options for what it needs and the
// defaults. Nothing is checked on the host until the first Create.
func New(opts ...Option) (*Runtime, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return nil, err
	}
	return &Runtime{o: o, vms: map[string]*Machine{}}, nil
}

// Name is "vm".
func (r *Runtime) Name() string { return "vm" }

// Dir is the state directory of VM id. Callers may keep files of their own
// in it while the VM exists; Delete removes it.
func (r *Runtime) Dir(id string) string { return filepath.Join(r.o.stateDir, dirName(id)) }

// dirName keeps unix socket paths under the kernel's 108-byte limit: an ID
// longer than 24 bytes (a 64-hex container ID) is replaced by 24 hex digits
// of its SHA-256, which is as unique in practice and the same for every caller.
func dirName(id string) string {
	if len(id) <= 24 {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:12])
}

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func (r *Runtime) owned(id string) *Machine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vms[id]
}

// Create boots the VM for the bundle and returns its init process, not yet
// running: the guest is up and the root mounted when Create returns.
func (r *Runtime) Create(ctx context.Context, id, bundle string, stdio runtime.IO) (runtime.Process, error) {
	if !validID.MatchString(id) {
		return nil, fmt.Errorf("create vm %q: invalid ID: %w", id, errdefs.ErrInvalidArgument)
	}
	bundle, err := filepath.Abs(bundle)
	if err != nil {
		return nil, fmt.Errorf("create vm %s: %w", id, err)
	}
	spec, err := loadSpec(bundle)
	if err != nil {
		return nil, fmt.Errorf("create vm %s: %w", id, err)
	}
	dir := r.Dir(id)
	mem, vcpus := resources(spec, r.o.memoryMiB)
	m := &Machine{
		ID: id,
		Config: VMConfig{
			ID: id, Machine: r.o.machine, MemoryMiB: mem, VCPUs: vcpus, TSCkHz: hostTSCkHz(),
			SharedDir: rootPath(bundle, spec), RootTag: rootTag,
			QMPSocket: filepath.Join(dir, qmpSocket), AgentSocket: filepath.Join(dir, agentSocket),
			VirtiofsSocket: filepath.Join(dir, virtiofsSocket), ConsoleLog: filepath.Join(dir, consoleLog),
		},
		Handlers:   defaultHandlers(),
		rt:         r,
		dir:        dir,
		bundle:     bundle,
		spec:       spec,
		stdio:      stdio,
		setupCh:    make(chan error, 1),
		readerDone: make(chan struct{}),
		procs:      map[uint32]*process{},
		nextID:     agentproto.InitID + 1,
	}
	for _, edit := range r.o.editHandlers {
		edit(&m.Handlers)
	}
	r.mu.Lock()
	if r.vms[id] != nil {
		r.mu.Unlock()
		return nil, fmt.Errorf("create vm %s: %w", id, errdefs.ErrAlreadyExists)
	}
	r.vms[id] = m
	r.mu.Unlock()

	if err := m.Handlers.Validation.Run(ctx, m); err != nil {
		r.forget(id)
		return nil, err
	}
	if err := m.Handlers.Boot.Run(ctx, m); err != nil {
		m.stop(syscall.SIGKILL)
		if m.madeDir {
			os.RemoveAll(dir)
		}
		r.forget(id)
		return nil, err
	}
	m.bootCancel()
	m.init = newProcess(m, agentproto.InitID, "", guestProcess(spec.Process, shapeOf(stdio)), stdio)
	return m.init, nil
}

func (r *Runtime) forget(id string) {
	r.mu.Lock()
	delete(r.vms, id)
	r.mu.Unlock()
}

// Start runs the init process of VM id.
func (r *Runtime) Start(ctx context.Context, id string) error {
	if m := r.owned(id); m != nil {
		return m.startInit(ctx)
	}
	c, _, err := call(ctx, r.Dir(id), id, ctlRequest{Op: "start"})
	if err != nil {
		return r.notOwnedErr(id, "start", err)
	}
	c.Close()
	return nil
}

// notOwnedErr turns a failed control call into ErrNotFound when the VM does
// not exist at all.
func (r *Runtime) notOwnedErr(id, op string, err error) error {
	if _, serr := readState(r.Dir(id), id); errdefs.IsNotFound(serr) {
		return fmt.Errorf("%s vm %s: %w", op, id, errdefs.ErrNotFound)
	}
	return err
}

func (m *Machine) startInit(ctx context.Context) error {
	m.mu.Lock()
	st := m.state.Status
	m.mu.Unlock()
	if st != runtime.StatusCreated || m.init == nil {
		return fmt.Errorf("start vm %s: it is %s, not created: %w", m.ID, st, errdefs.ErrConflict)
	}
	if err := m.run(ctx, m.init); err != nil {
		return err
	}
	m.mu.Lock()
	if m.state.Status == runtime.StatusCreated {
		m.state.Status = runtime.StatusRunning
	}
	m.mu.Unlock()
	return m.saveState()
}

// Exec runs proc in the running VM id.
func (r *Runtime) Exec(ctx context.Context, id, execID string, proc *specs.Process, stdio runtime.IO) (runtime.Process, error) {
	if proc == nil || len(proc.Args) == 0 {
		return nil, fmt.Errorf("exec in vm %s: no args: %w", id, errdefs.ErrInvalidArgument)
	}
	if m := r.owned(id); m != nil {
		return m.exec(ctx, execID, proc, stdio)
	}
	p, err := remoteExec(ctx, r.Dir(id), id, execID, proc, stdio)
	if err != nil {
		return nil, r.notOwnedErr(id, "exec in", err)
	}
	return p, nil
}

func (m *Machine) exec(ctx context.Context, execID string, proc *specs.Process, stdio runtime.IO) (*process, error) {
	m.mu.Lock()
	if m.state.Status != runtime.StatusRunning {
		st := m.state.Status
		m.mu.Unlock()
		return nil, fmt.Errorf("exec in vm %s: it is %s, not running: %w", m.ID, st, errdefs.ErrConflict)
	}
	id := m.nextID
	m.nextID++
	m.mu.Unlock()
	p := newProcess(m, id, execID, guestProcess(proc, shapeOf(stdio)), stdio)
	if err := m.run(ctx, p); err != nil {
		return nil, err
	}
	return p, nil
}

// Kill signals the init process of VM id (every guest process with all).
// Before Start, a signal ends the VM and init reports 128+sig.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	if m := r.owned(id); m != nil {
		return m.kill(sig, all)
	}
	c, _, err := call(ctx, r.Dir(id), id, ctlRequest{Op: "kill", Signal: int(sig), All: all})
	if err == nil {
		c.Close()
		return nil
	}
	st, serr := readState(r.Dir(id), id)
	if serr != nil {
		return serr
	}
	if !st.QEMU.alive() {
		return fmt.Errorf("kill vm %s: not running: %w", id, errdefs.ErrConflict)
	}
	if sig == syscall.SIGKILL { // no owner, but a VM: end it
		st.QEMU.signal(syscall.SIGKILL)
		return nil
	}
	return err
}

func (m *Machine) kill(sig syscall.Signal, all bool) error {
	m.mu.Lock()
	st := m.state.Status
	m.mu.Unlock()
	switch {
	case st == runtime.StatusStopped:
		return fmt.Errorf("kill vm %s: not running: %w", m.ID, errdefs.ErrConflict)
	case st == runtime.StatusCreated && sig != 0:
		// Asynchronous, like any signal: the caller (maybe over the
		// control socket of a holder that exits with init) gets its reply
		// first; Wait reports 128+sig.
		go m.stop(sig)
		return nil
	case sig == 0:
		return nil
	}
	return m.init.signal(sig, all)
}

// State reports VM id's status; Pid is QEMU's.
func (r *Runtime) State(ctx context.Context, id string) (runtime.State, error) {
	if m := r.owned(id); m != nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		return runtime.State{ID: id, Status: m.state.Status, Pid: m.state.QEMU.Pid}, nil
	}
	st, err := readState(r.Dir(id), id)
	if err != nil {
		return runtime.State{ID: id, Status: runtime.StatusUnknown}, err
	}
	if !st.QEMU.alive() || !st.Owner.alive() {
		st.Status = runtime.StatusStopped
	}
	return runtime.State{ID: id, Status: st.Status, Pid: st.QEMU.Pid}, nil
}

// Delete stops VM id's QEMU and its virtiofsds and removes its state directory.
// It refuses a running VM unless force. It is idempotent: deleting a VM
// that is gone returns nil, and it works from any process, also after the
// owner was killed.
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("delete vm %q: invalid ID: %w", id, errdefs.ErrInvalidArgument)
	}
	dir := r.Dir(id)
	if m := r.owned(id); m != nil {
		m.mu.Lock()
		st := m.state.Status
		m.mu.Unlock()
		if st == runtime.StatusRunning && !force {
			return fmt.Errorf("delete vm %s: it is running: %w", id, errdefs.ErrConflict)
		}
		m.stop(syscall.SIGKILL)
		r.forget(id)
		return removeStateDir(dir, id)
	}
	st, err := readState(dir, id)
	if errdefs.IsNotFound(err) {
		return os.RemoveAll(dir)
	}
	if err != nil && !force {
		return err
	}
	if st.QEMU.alive() && st.Owner.alive() && st.Status == runtime.StatusRunning && !force {
		return fmt.Errorf("delete vm %s: it is running: %w", id, errdefs.ErrConflict)
	}
	if st.QEMU.alive() {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if c, err := qmp.Dial(qctx, filepath.Join(dir, qmpSocket)); err == nil {
			_ = c.Quit(qctx)
			c.Close()
		}
		cancel()
	}
	procs := append([]procRef{st.QEMU, st.Virtiofsd}, st.Shares...)
	deadline := time.Now().Add(3 * time.Second)
	for _, p := range procs {
		for p.alive() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		p.signal(syscall.SIGKILL)
	}
	for _, p := range procs {
		for p.alive() && time.Now().Before(deadline.Add(2*time.Second)) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return removeStateDir(dir, id)
}

// removeStateDir removes dir, retrying while an owner that is winding down
// may still write its last state into it.
func removeStateDir(dir, id string) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("delete vm %s: %w", id, err)
}
