// Package engine holds berth's use cases: create, start, stop, exec, remove…
// It wires the image store, snapshots, spec generation, the runtime backends
// and the state database together, and owns each workload's state machine.
// The CLI calls it; it never imports the CLI.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/image"
	"github.com/berthdev/berth/internal/snapshot/overlay"
)

// Default locations, overridable by options and BERTH_ROOT / BERTH_STATE.
const (
	DefaultRoot   = "/var/lib/berth"
	DefaultState  = "/run/berth"
	DefaultConfig = "/etc/berth/config.json"
)

// Config is berth's configuration file (JSON). Every field is optional.
type Config struct {
	// Runtime is the default OCI runtime: "crun", "runc" or a path. Empty:
	// probe crun then runc and remember the first that works.
	Runtime string `json:"runtime,omitempty"`
	// Kernel is the guest kernel for microVMs (default: the one set-up fetched).
	Kernel string `json:"kernel,omitempty"`
	// Accel forces the microVM accelerator, "kvm" or "tcg".
	Accel string `json:"accel,omitempty"`
	// InsecureRegistries may be reached over plain HTTP.
	InsecureRegistries []string `json:"insecure-registries,omitempty"`
}

// Options locate berth's directories.
type Options struct {
	// Root holds durable data (images, containers' writable layers, logs).
	Root string
	// State holds runtime state (mounts, sockets, runtime state).
	State string
	// ConfigFile is the configuration file; missing is fine.
	ConfigFile string
	// Executable is the berth binary the monitor is started from.
	Executable string
}

// Engine is berth's core.
type Engine struct {
	root, stateDir string
	exe            string
	cfg            Config
	db             *state.Store
	images         *image.Store
	snaps          *overlay.Snapshotter
}

// New opens berth's stores under the given directories.
func New(ctx context.Context, opts Options) (*Engine, error) {
	if opts.Root == "" {
		opts.Root = DefaultRoot
	}
	if opts.State == "" {
		opts.State = DefaultState
	}
	if opts.ConfigFile == "" {
		opts.ConfigFile = DefaultConfig
	}
	if opts.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the berth executable: %w", err)
		}
		opts.Executable = exe
	}
	e := &Engine{root: opts.Root, stateDir: opts.State, exe: opts.Executable}
	if data, err := os.ReadFile(opts.ConfigFile); err == nil {
		if err := json.Unmarshal(data, &e.cfg); err != nil {
			return nil, fmt.Errorf("read config %s: %v: fix or remove the file: %w", opts.ConfigFile, err, errdefs.ErrInvalidArgument)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read config %s: %w", opts.ConfigFile, err)
	}
	for _, d := range []string{e.root, e.stateDir, e.containersRoot(), e.runRoot()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	var err error
	if e.db, err = state.Open(e.root); err != nil {
		return nil, err
	}
	if e.images, err = image.Open(filepath.Join(e.root, "image")); err != nil {
		return nil, err
	}
	if e.snaps, err = overlay.New(filepath.Join(e.root, "snapshots")); err != nil {
		return nil, err
	}
	return e, nil
}

// Images is the image store.
func (e *Engine) Images() *image.Store { return e.images }

// Config is the configuration in force.
func (e *Engine) Config() Config { return e.cfg }

// Root and StateDir are berth's directories.
func (e *Engine) Root() string     { return e.root }
func (e *Engine) StateDir() string { return e.stateDir }

func (e *Engine) containersRoot() string        { return filepath.Join(e.root, "containers") }
func (e *Engine) runRoot() string               { return filepath.Join(e.stateDir, "containers") }
func (e *Engine) containerDir(id string) string { return filepath.Join(e.containersRoot(), id) }
func (e *Engine) runDir(id string) string       { return filepath.Join(e.runRoot(), id) }
func (e *Engine) bundleDir(id string) string    { return filepath.Join(e.runDir(id), "bundle") }
func (e *Engine) rootfsDir(id string) string    { return filepath.Join(e.bundleDir(id), "rootfs") }
func (e *Engine) socketPath(id string) string {
	return filepath.Join(e.runDir(id), "monitor.sock")
}

// LogPath is where the workload's json-file log lives.
func (e *Engine) LogPath(id string) string {
	return filepath.Join(e.containerDir(id), id+"-json.log")
}

func (e *Engine) ociRuntimeRoot() string { return filepath.Join(e.stateDir, "runc") }
func (e *Engine) vmStateRoot() string    { return filepath.Join(e.stateDir, "vm") }
func cgroupPath(id string) string        { return "/berth/" + id }
