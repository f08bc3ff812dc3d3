package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
	"github.com/berthdev/berth/internal/runtime/vm/initramfs"
	"github.com/berthdev/berth/internal/runtime/vm/qmp"
)

// rootTag is the virtio-fs tag of the shared root.
const rootTag = "berthroot"

// Machine is one microVM this process owns: QEMU, virtiofsd and the
// connection to the agent.
type Machine struct {
	// ID is the workload ID.
	ID string
	// Config is the VM's QEMU configuration; boot handlers complete it.
	Config VMConfig
	// Handlers are the boot steps Create runs.
	Handlers Handlers

	rt      *Runtime
	dir     string
	madeDir bool // the state directory is ours to remove on a failed boot
	bundle  string
	spec    *specs.Spec
	stdio   runtime.IO

	bootCtx    context.Context
	bootCancel context.CancelFunc

	attachment *netAttachment // taps until QEMU holds them, and the guest's network
	vfsd, qemu *exec.Cmd
	shares     sharePlan        // shares.go
	shareProcs []*virtiofsdProc // one virtiofsd per share
	qemuExited chan struct{}
	conn       net.Conn
	w          *agentproto.Writer
	setupCh    chan error
	readerDone chan struct{}
	ctl        net.Listener

	mu         sync.Mutex
	state      stateFile
	procs      map[uint32]*process
	nextID     uint32
	init       *process
	killSignal syscall.Signal // set when the host ended the VM on purpose
}

func (m *Machine) path(name string) string { return filepath.Join(m.dir, name) }

// failure wraps err with the VM's console tail, the evidence of a guest
// that did not come up or died.
func (m *Machine) failure(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	var b strings.Builder
	if t := tail(m.path(qemuLog), 10); t != "" {
		b.WriteString("\nqemu: " + strings.ReplaceAll(t, "\n", "\nqemu: "))
	}
	if t := tail(m.path(consoleLog), 20); t != "" {
		b.WriteString("\nconsole: " + strings.ReplaceAll(t, "\n", "\nconsole: "))
	}
	return fmt.Errorf("vm %s: %w%s", m.ID, err, b.String())
}

func (m *Machine) validateHost(ctx context.Context) error {
	o := &m.rt.o
	missing := func(what, path, hint string) error {
		return fmt.Errorf("vm %s: %s %s not found (%s): %w", m.ID, what, path, hint, errdefs.ErrUnavailable)
	}
	qemu, err := exec.LookPath(o.qemu)
	if err != nil {
		return missing("QEMU", o.qemu, "install the Debian package qemu-system-x86")
	}
	m.Config.QEMU = qemu
	if _, err := os.Stat(o.virtiofsd); err != nil {
		return missing("virtiofsd", o.virtiofsd, "install the Debian package qemu-system-common")
	}
	m.Config.Virtiofsd = o.virtiofsd
	// The uncompressed vmlinux (booted through PVH) saves the guest's
	// decompression, ~0.5 s under TCG; vmlinuz works everywhere.
	kernel := filepath.Join(o.kernelDir, "vmlinux")
	if _, err := os.Stat(kernel); err != nil {
		kernel = filepath.Join(o.kernelDir, "vmlinuz")
	}
	if o.kernel != "" {
		if _, err := os.Stat(o.kernel); err != nil {
			return missing("guest kernel", o.kernel, "check --kernel or the config file's kernel setting")
		}
		kernel = o.kernel
	}
	if _, err := os.Stat(kernel); err != nil {
		return missing("guest kernel", kernel, "run hack/fetch-kernel.sh "+o.kernelDir+"; it unpacks the Debian package linux-image-cloud-amd64")
	}
	if _, err := os.Stat(filepath.Join(o.kernelDir, "modules", "virtio.ko")); err != nil {
		return missing("guest kernel modules in", filepath.Join(o.kernelDir, "modules"), "run hack/fetch-kernel.sh "+o.kernelDir+"; it unpacks the Debian package linux-image-cloud-amd64")
	}
	m.Config.Kernel = kernel
	if _, err := os.Stat(o.agent); err != nil {
		return missing("guest agent", o.agent, "build it with CGO_ENABLED=0 go build -o bin/berth-agent ./cmd/berth-agent, or pass WithAgent")
	}
	return nil
}

func (m *Machine) validateBundle(ctx context.Context) error {
	st, err := os.Stat(m.Config.SharedDir)
	if err != nil || !st.IsDir() {
		return fmt.Errorf("vm %s: root filesystem %s is not a directory: %w", m.ID, m.Config.SharedDir, errdefs.ErrInvalidArgument)
	}
	if l := len(m.path(virtiofsSocket)); l > 100 {
		return fmt.Errorf("vm %s: state directory %s is too long for unix sockets (%d bytes); choose a shorter state dir: %w", m.ID, m.dir, l, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (m *Machine) createStateDir(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(m.dir), 0o711); err != nil {
		return fmt.Errorf("create vm %s: %w", m.ID, err)
	}
	if err := os.Mkdir(m.dir, 0o700); err != nil {
		if os.IsExist(err) {
			return fmt.Errorf("create vm %s: %w", m.ID, errdefs.ErrAlreadyExists)
		}
		return fmt.Errorf("create vm %s: %w", m.ID, err)
	}
	m.madeDir = true
	m.state = stateFile{ID: m.ID, Bundle: m.bundle, Status: runtime.StatusUnknown, Created: time.Now().UTC(), Owner: refOf(os.Getpid())}
	return m.saveState()
}

// saveState writes a snapshot of m.state; callers must not hold m.mu.
func (m *Machine) saveState() error {
	m.mu.Lock()
	st := m.state
	m.mu.Unlock()
	return writeState(m.dir, st)
}

// guestModules are the modules the agent loads: the virtio transport of the
// machine type, the console (virtio-serial) driver, virtio-fs and
// virtio-net (with failover and net_failover, from its .modinfo).
func guestModules(machine string) []string {
	transport := "virtio_mmio"
	if machine != "microvm" {
		transport = "virtio_pci"
	}
	return []string{transport, "virtio_console", "virtiofs", "virtio_net"}
}

func (m *Machine) buildInitramfs(ctx context.Context) error {
	o := &m.rt.o
	version, _ := os.ReadFile(filepath.Join(o.kernelDir, "version"))
	path, err := initramfs.Build(ctx, o.cacheDir, initramfs.Spec{
		Agent:      o.agent,
		ModulesDir: filepath.Join(o.kernelDir, "modules"),
		Modules:    guestModules(m.Config.Machine),
		Key:        m.Config.Machine + " " + strings.TrimSpace(string(version)),
	})
	if err != nil {
		return fmt.Errorf("vm %s: %w", m.ID, err)
	}
	m.Config.Initrd = path
	return nil
}

func (m *Machine) selectAccel(ctx context.Context) error {
	m.Config.Accel = m.rt.selectAccel(ctx, m.Config)
	return nil
}

func (m *Machine) startVirtiofsd(ctx context.Context) error {
	p, err := launchVirtiofsd(m.Config.Virtiofsd, m.Config.VirtiofsdArgs(), m.path(virtiofsdLog), nil)
	if err != nil {
		return fmt.Errorf("vm %s: start virtiofsd: %w", m.ID, err)
	}
	m.vfsd = p.cmd
	m.mu.Lock()
	m.state.Virtiofsd = refOf(p.cmd.Process.Pid)
	m.mu.Unlock()
	if err := m.saveState(); err != nil {
		return err
	}
	return m.awaitVirtiofsd(ctx, p, m.Config.VirtiofsSocket, virtiofsdLog)
}

// joinNetwork gives the VM a NIC for each interface of the network
// namespace the bundle's spec joins (net.go); without one it has only lo.
func (m *Machine) joinNetwork(ctx context.Context) error {
	path := netnsPath(m.spec)
	if path == "" {
		return nil
	}
	att, err := attachNetNS(path, 3)
	if err != nil {
		return fmt.Errorf("vm %s: %w", m.ID, err)
	}
	m.attachment = att
	m.Config.NICs = att.nics
	return nil
}

func (m *Machine) startQEMU(ctx context.Context) error {
	log, err := os.OpenFile(m.path(qemuLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("vm %s: %w", m.ID, err)
	}
	defer log.Close()
	if err := m.Config.CheckDevices(); err != nil { // shares.go
		return fmt.Errorf("vm %s: %w", m.ID, err)
	}
	cmd := exec.Command(m.Config.QEMU, m.Config.Args()...)
	cmd.Stdout, cmd.Stderr = log, log
	if m.attachment != nil {
		cmd.ExtraFiles = m.attachment.taps // fd 3, 4…: NIC.FD
	}
	// QEMU dies with its owner; its own process group keeps the owner's
	// terminal signals (^C) away from it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	m.bootCtx, m.bootCancel = context.WithTimeout(ctx, m.rt.o.bootTimeout)
	err = cmd.Start()
	if m.attachment != nil {
		// QEMU holds the taps now: they go when it exits.
		m.attachment.close()
	}
	if err != nil {
		return fmt.Errorf("vm %s: start QEMU: %w", m.ID, err)
	}
	m.qemu = cmd
	m.qemuExited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(m.qemuExited) }()
	m.mu.Lock()
	m.state.QEMU = refOf(cmd.Process.Pid)
	m.mu.Unlock()
	return m.saveState()
}

// bootFailed explains why the guest is not ready: QEMU died, or the boot
// timed out.
func (m *Machine) bootFailed(what string) error {
	select {
	case <-m.qemuExited:
		return m.failure("QEMU exited while %s (%v): %w", what, m.qemu.ProcessState, errdefs.ErrUnavailable)
	default:
	}
	if errors.Is(m.bootCtx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", m.failure("boot timed out after %s while %s", m.rt.o.bootTimeout, what), context.DeadlineExceeded)
	}
	return fmt.Errorf("vm %s: %s: %w", m.ID, what, m.bootCtx.Err())
}

func (m *Machine) connectAgent(ctx context.Context) error {
	var d net.Dialer
	for {
		conn, err := d.DialContext(m.bootCtx, "unix", m.Config.AgentSocket)
		if err == nil {
			m.conn = conn
			m.w = agentproto.NewWriter(conn)
			go m.readLoop()
			return nil
		}
		select {
		case <-m.qemuExited:
			return m.bootFailed("connecting to the agent")
		case <-m.bootCtx.Done():
			return m.bootFailed("connecting to the agent")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (m *Machine) setupGuest(ctx context.Context) error {
	setup := guestSetup(m.spec, rootTag)
	if m.attachment != nil {
		setup.Network = m.attachment.network
	}
	setup.Shares = m.shares.guest
	if err := m.w.WriteJSON(agentproto.TypeSetup, 0, setup); err != nil {
		return m.failure("send setup: %v", err)
	}
	select {
	case err := <-m.setupCh:
		if err != nil {
			return m.failure("guest setup: %v", err)
		}
		return nil
	case <-m.readerDone:
		return m.bootFailed("waiting for the agent")
	case <-m.bootCtx.Done():
		return m.bootFailed("waiting for the agent")
	}
}

func (m *Machine) serveControl(ctx context.Context) error {
	l, err := net.Listen("unix", m.path(ctlSocket))
	if err != nil {
		return fmt.Errorf("vm %s: listen for control: %w", m.ID, err)
	}
	m.ctl = l
	go m.acceptControl(l)
	m.mu.Lock()
	m.state.Status = runtime.StatusCreated
	m.mu.Unlock()
	return m.saveState()
}

// readLoop dispatches the agent's frames until the connection ends.
func (m *Machine) readLoop() {
	defer close(m.readerDone)
	r := bufio.NewReaderSize(m.conn, 64<<10)
	for {
		f, err := agentproto.ReadFrame(r)
		if err != nil {
			m.vmGone()
			return
		}
		m.dispatch(f)
	}
}

func (m *Machine) dispatch(f agentproto.Frame) {
	if f.ID == 0 {
		switch f.Type {
		case agentproto.TypeReady:
			m.setupDone(nil)
		case agentproto.TypeError:
			var e agentproto.Error
			_ = f.Decode(&e)
			m.setupDone(errors.New(e.Message))
		}
		return
	}
	m.mu.Lock()
	p := m.procs[f.ID]
	m.mu.Unlock()
	if p == nil {
		return
	}
	switch f.Type {
	case agentproto.TypeStarted:
		p.markStarted(nil)
	case agentproto.TypeError:
		var e agentproto.Error
		_ = f.Decode(&e)
		class := errdefs.ErrInvalidArgument
		if e.NotFound {
			class = errdefs.ErrNotFound
		}
		p.markStarted(fmt.Errorf("vm %s: start process %s: %s: %w", m.ID, p.name(), e.Message, class))
	case agentproto.TypeStdout:
		if p.stdio.Stdout != nil {
			_, _ = p.stdio.Stdout.Write(f.Payload)
		}
	case agentproto.TypeStderr:
		w := p.stdio.Stderr
		if p.stdio.Terminal || w == nil {
			w = p.stdio.Stdout
		}
		if w != nil {
			_, _ = w.Write(f.Payload)
		}
	case agentproto.TypeExit:
		var e agentproto.Exit
		_ = f.Decode(&e)
		_ = m.w.Write(agentproto.TypeExitAck, f.ID, nil)
		m.processExited(p, runtime.ExitStatus{Code: e.Code, Signal: syscall.Signal(e.Signal), ExitedAt: time.Now()}, nil)
	}
}

func (m *Machine) setupDone(err error) {
	select {
	case m.setupCh <- err:
	default:
	}
}

func (m *Machine) processExited(p *process, st runtime.ExitStatus, err error) {
	m.mu.Lock()
	delete(m.procs, p.id)
	if p == m.init {
		m.state.Status = runtime.StatusStopped
	}
	m.mu.Unlock()
	p.markStarted(err)
	p.finish(st, err)
	if p == m.init {
		_ = m.saveState()
	}
}

// vmGone runs when the agent connection ends: QEMU exited or was told to.
// Processes still running end with an error (with the console tail), or
// with 128+N when the host killed the VM with signal N.
func (m *Machine) vmGone() {
	if m.qemuExited != nil {
		select {
		case <-m.qemuExited:
		case <-time.After(3 * time.Second):
		}
	}
	m.mu.Lock()
	procs := make([]*process, 0, len(m.procs)+1)
	for _, p := range m.procs {
		procs = append(procs, p)
	}
	if m.init != nil && m.procs[m.init.id] == nil && !m.init.exited() {
		procs = append(procs, m.init) // never started
	}
	sig := m.killSignal
	m.mu.Unlock()
	code := -1
	if m.qemu != nil && m.qemu.ProcessState != nil && qemuDone(m.qemuExited) {
		// QEMU killed from outside (the OOM killer, kill -9): report it the
		// way a container killed by that signal is reported, with the error.
		if ws, ok := m.qemu.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	}
	for _, p := range procs {
		if sig != 0 {
			m.processExited(p, runtime.ExitStatus{Code: 128 + int(sig), Signal: sig, ExitedAt: time.Now()}, nil)
			continue
		}
		m.processExited(p, runtime.ExitStatus{Code: code, ExitedAt: time.Now()},
			m.failure("VM stopped before process %s ended: %w", p.name(), errdefs.ErrUnavailable))
	}
	m.mu.Lock()
	m.state.Status = runtime.StatusStopped
	m.mu.Unlock()
	_ = m.saveState()
}

// stop ends the VM: QMP quit, then SIGKILL; virtiofsd goes with it. It
// waits until both have exited and is safe to call more than once.
func (m *Machine) stop(sig syscall.Signal) {
	m.mu.Lock()
	if m.killSignal == 0 {
		m.killSignal = sig
	}
	m.mu.Unlock()
	if m.ctl != nil {
		m.ctl.Close()
	}
	if m.qemu != nil {
		select {
		case <-m.qemuExited:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if c, err := qmp.Dial(ctx, m.Config.QMPSocket); err == nil {
				_ = c.Quit(ctx)
				c.Close()
			}
			cancel()
			select {
			case <-m.qemuExited:
			case <-time.After(2 * time.Second):
				_ = m.qemu.Process.Kill()
				<-m.qemuExited
			}
		}
	}
	if m.conn != nil {
		m.conn.Close()
		<-m.readerDone
	}
	if m.vfsd != nil {
		_ = m.vfsd.Process.Kill()
	}
	if m.attachment != nil {
		m.attachment.close() // a boot that failed before QEMU started
	}
	m.mu.Lock()
	for _, p := range m.shareProcs {
		_ = p.cmd.Process.Kill()
	}
	m.mu.Unlock()
	if m.bootCancel != nil {
		m.bootCancel()
	}
}

func qemuDone(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
