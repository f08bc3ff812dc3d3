package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/cgroups"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
)

var _ runtime.Runtime = (*Runtime)(nil)

// Runtime drives an OCI runtime binary. The caller process becomes a child
// subreaper (Create sets it), so that container processes are reparented to
// it once the runtime binary exits and their exit status can be collected
// with wait4.
type Runtime struct {
	binary string // absolute path
	name   string // "runc", "crun"…
	root   string // the runtime's --root state directory
	opts   options
	// v1View: run every invocation in a private mount namespace showing
	// the cgroups as plain v1 (crun on a hybrid host; see startInV1View).
	v1View bool

	mu      sync.Mutex
	pending map[string]*created // created, not started yet
	toLearn map[string]bool     // seccomp profiles PrepareSpec found uncached (seccomp.go)
}

// created is a container between Create and Start: only its IO wiring.
type created struct {
	bundle string
	stdio  runtime.IO
	proc   *process
}

type options struct {
	tempDir      string
	drainTimeout time.Duration
}

// Option configures New.
type Option func(*options) error

// WithTempDir sets where per-invocation files (pid file, log, console
// socket, process.json) are made; they are removed when the invocation
// returns. Default: os.TempDir().
func WithTempDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return fmt.Errorf("temp dir: empty path: %w", errdefs.ErrInvalidArgument)
		}
		o.tempDir = dir
		return nil
	}
}

// WithDrainTimeout bounds how long Wait keeps copying output after the
// process has exited, for descendants that keep its stdout or stderr open.
// Default: 2s.
func WithDrainTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("drain timeout %v: not positive: %w", d, errdefs.ErrInvalidArgument)
		}
		o.drainTimeout = d
		return nil
	}
}

// packages names the Debian package providing each known runtime.
var packages = map[string]string{"runc": "runc", "crun": "crun"}

// New returns the backend for binary ("runc", "crun", or a path) keeping its
// state under root (e.g. /run/berth/runc). A binary that cannot be found is
// an error wrapping errdefs.ErrUnavailable that says what to install.
func New(binary, root string, opts ...Option) (*Runtime, error) {
	o := options{tempDir: os.TempDir(), drainTimeout: 2 * time.Second}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("new OCI runtime %s: %w", binary, err)
		}
	}
	path, err := lookBinary(binary)
	if err != nil {
		return nil, err
	}
	if root == "" {
		return nil, fmt.Errorf("new OCI runtime %s: empty state root: %w", binary, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(root, 0o711); err != nil {
		return nil, fmt.Errorf("new OCI runtime %s: create state root: %w", binary, err)
	}
	name := filepath.Base(path)
	return &Runtime{
		binary:  path,
		name:    name,
		root:    root,
		opts:    o,
		v1View:  needsV1View(name, cgroups.DetectMode()),
		pending: map[string]*created{},
		toLearn: map[string]bool{},
	}, nil
}

func lookBinary(binary string) (string, error) {
	path, err := exec.LookPath(binary)
	if err != nil {
		hint := ""
		if pkg, ok := packages[filepath.Base(binary)]; ok {
			hint = fmt.Sprintf(" (install it: apt-get install %s)", pkg)
		}
		return "", fmt.Errorf("find OCI runtime %s: %w%s: %w", binary, err, hint, errdefs.ErrUnavailable)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("find OCI runtime %s: %w", binary, err)
	}
	return abs, nil
}

// Name returns the binary's base name, e.g. "runc".
func (r *Runtime) Name() string { return r.name }

// Binary returns the absolute path of the runtime binary.
func (r *Runtime) Binary() string { return r.binary }

func validID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("container ID %q: %w", id, errdefs.ErrInvalidArgument)
	}
	return nil
}

func setSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	return nil
}

// Create records the container's bundle and IO wiring; nothing runs until
// Start, so creating costs no runtime invocation. It makes the caller a
// child subreaper.
func (r *Runtime) Create(_ context.Context, id, bundle string, stdio runtime.IO) (runtime.Process, error) {
	if err := validID(id); err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	if _, err := os.Stat(filepath.Join(bundle, "config.json")); err != nil {
		return nil, fmt.Errorf("create %s: bundle %s: %w: %w", id, bundle, err, errdefs.ErrInvalidArgument)
	}
	if err := setSubreaper(); err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.pending[id]; ok {
		return nil, fmt.Errorf("create %s: %w", id, errdefs.ErrAlreadyExists)
	}
	if _, err := os.Stat(filepath.Join(r.root, id)); err == nil {
		return nil, fmt.Errorf("create %s: %s state exists: %w", id, r.name, errdefs.ErrAlreadyExists)
	}
	p := newProcess(id, r.opts.drainTimeout)
	r.pending[id] = &created{bundle: bundle, stdio: stdio, proc: p}
	return p, nil
}

// Start runs the created container in one runtime invocation (`run
// --detach`, faster than create then start).
func (r *Runtime) Start(ctx context.Context, id string) error {
	r.mu.Lock()
	c, ok := r.pending[id]
	delete(r.pending, id)
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("start %s: not created by this runtime: %w", id, errdefs.ErrNotFound)
	}
	learn := r.learnPending()
	args := []string{"run", "--detach", "--bundle", c.bundle}
	err := r.launch(ctx, "run", id, args, c.stdio, c.proc, nil)
	if err != nil {
		c.proc.fail(err)
		return err
	}
	if learn {
		// Once per profile, crun and boot: the workload already runs, its
		// root filesystem is still mounted (the caller cleans up only after
		// Start returned), and the next start with this profile skips
		// compiling it.
		_ = r.learnFilter(context.WithoutCancel(ctx), c.bundle)
	}
	return nil
}

// Exec runs proc in the running container. The process's Terminal follows
// stdio.Terminal; its console size follows stdio.Size when proc has none.
func (r *Runtime) Exec(ctx context.Context, id, execID string, proc *specs.Process, stdio runtime.IO) (runtime.Process, error) {
	if err := validID(id); err != nil {
		return nil, fmt.Errorf("exec %s in %s: %w", execID, id, err)
	}
	if proc == nil {
		return nil, fmt.Errorf("exec %s in %s: no process: %w", execID, id, errdefs.ErrInvalidArgument)
	}
	if err := setSubreaper(); err != nil {
		return nil, fmt.Errorf("exec %s in %s: %w", execID, id, err)
	}
	pc := *proc
	pc.Terminal = stdio.Terminal
	if stdio.Terminal && pc.ConsoleSize == nil && stdio.Size != nil {
		pc.ConsoleSize = &specs.Box{Width: uint(stdio.Size.Width), Height: uint(stdio.Size.Height)}
	}
	b, err := json.Marshal(&pc)
	if err != nil {
		return nil, fmt.Errorf("exec %s in %s: encode process: %w", execID, id, err)
	}
	p := newProcess(id+"/"+execID, r.opts.drainTimeout)
	args := []string{"exec", "--detach"}
	if err := r.launch(ctx, "exec", id, args, stdio, p, b); err != nil {
		return nil, err
	}
	return p, nil
}

// Kill sends sig to the container's init process, or every process in it
// when all is set. A container created but not started is not running: an
// error wrapping errdefs.ErrConflict.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	r.mu.Lock()
	_, pending := r.pending[id]
	r.mu.Unlock()
	if pending {
		return fmt.Errorf("%s kill %s: container not started: %w", r.name, id, errdefs.ErrConflict)
	}
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	args = append(args, id, strconv.Itoa(int(sig)))
	_, err := r.command(ctx, "kill", id, args...)
	return err
}

// ociState is the runtime's `state` output (the OCI state, plus extras).
type ociState struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
}

// State asks the runtime for the container's state; a container created but
// not started is StatusCreated with no PID. An unknown one is an error
// wrapping errdefs.ErrNotFound.
func (r *Runtime) State(ctx context.Context, id string) (runtime.State, error) {
	r.mu.Lock()
	_, pending := r.pending[id]
	r.mu.Unlock()
	if pending {
		return runtime.State{ID: id, Status: runtime.StatusCreated}, nil
	}
	out, err := r.command(ctx, "state", id, "state", id)
	if err != nil {
		return runtime.State{}, err
	}
	var st ociState
	if err := json.Unmarshal(out, &st); err != nil {
		return runtime.State{}, fmt.Errorf("%s state %s: decode: %w", r.name, id, err)
	}
	s := runtime.State{ID: id, Pid: st.Pid}
	switch st.Status {
	case "created":
		s.Status = runtime.StatusCreated
	case "running", "paused", "pausing":
		s.Status = runtime.StatusRunning
	case "stopped":
		s.Status = runtime.StatusStopped
		s.Pid = 0
	default:
		s.Status = runtime.StatusUnknown
	}
	return s, nil
}

// Delete removes the container from the runtime (its state and cgroups);
// with force it kills a running container first. A container the runtime
// does not know is deleted already.
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	r.mu.Lock()
	c, pending := r.pending[id]
	delete(r.pending, id)
	r.mu.Unlock()
	if pending {
		c.proc.fail(fmt.Errorf("wait %s: deleted before start: %w", id, errdefs.ErrNotFound))
		return nil
	}
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	_, err := r.command(ctx, "delete", id, append(args, id)...)
	if errdefs.IsNotFound(err) {
		return nil
	}
	return err
}

// command runs a short runtime invocation and returns its stdout; a failure
// is wrapped with the runtime's own message.
func (r *Runtime) command(ctx context.Context, verb, id string, args ...string) ([]byte, error) {
	dir, err := os.MkdirTemp(r.opts.tempDir, "berth-oci-")
	if err != nil {
		return nil, fmt.Errorf("%s %s %s: %w", r.name, verb, id, err)
	}
	defer os.RemoveAll(dir)
	logPath := filepath.Join(dir, "log")
	cmd := exec.CommandContext(ctx, r.binary, r.globalArgs(logPath, args)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := r.runCmd(cmd); err != nil {
		return nil, r.runtimeError(verb, id, logPath, stderr.Bytes(), err)
	}
	return stdout.Bytes(), nil
}

func (r *Runtime) globalArgs(logPath string, args []string) []string {
	return append([]string{"--root", r.root, "--log", logPath, "--log-format", "json"}, args...)
}

// runtimeError builds the error for a failed invocation from the last error
// in the runtime's JSON log, else its stderr, and classifies it.
func (r *Runtime) runtimeError(verb, id, logPath string, stderr []byte, err error) error {
	msg := r.runtimeMessage(verb, logPath, stderr, err)
	if class := classify(verb, msg); class != nil {
		return fmt.Errorf("%s %s %s: %s: %w", r.name, verb, id, msg, class)
	}
	return fmt.Errorf("%s %s %s: %s: %w", r.name, verb, id, msg, err)
}

// runtimeMessage is the runtime's own account of a failed invocation, without
// the prefixes runc adds.
func (r *Runtime) runtimeMessage(verb, logPath string, stderr []byte, err error) string {
	msg := lastLogError(logPath)
	if msg == "" {
		msg = lastLine(stderr)
	}
	if msg == "" {
		msg = err.Error()
	}
	for _, prefix := range []string{r.name + " " + verb + " failed: ", "unable to start container process: "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return msg
}

func lastLogError(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	var msg string
	for _, line := range bytes.Split(b, []byte("\n")) {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(line, &e) == nil && (e.Level == "error" || e.Level == "fatal") && e.Msg != "" {
			msg = e.Msg
		}
	}
	return msg
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// classify maps a runtime's message to an error class, or nil.
func classify(verb, msg string) error {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "does not exist"),
		strings.Contains(m, "executable file not found"),
		(verb == "state" || verb == "delete" || verb == "kill") && strings.Contains(m, "no such file or directory"):
		return errdefs.ErrNotFound
	case strings.Contains(m, "already exists"), strings.Contains(m, "exists:"):
		return errdefs.ErrAlreadyExists
	case strings.Contains(m, "not running"), strings.Contains(m, "not stopped"),
		strings.Contains(m, "is running"), strings.Contains(m, "paused"),
		strings.Contains(m, "is not in `created` or `stopped` state"): // crun
		return errdefs.ErrConflict
	case strings.Contains(m, "permission denied"):
		return errdefs.ErrInvalidArgument
	}
	return nil
}

// errNotRunning reports a process that has ended already.
var errNotRunning = errors.New("process not running")
