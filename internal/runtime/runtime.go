// Package runtime defines the one interface every isolation backend
// implements: the OCI runtime binary backend (runtime/oci) runs Linux
// containers, the QEMU backend (runtime/vm) runs microVMs. The engine and the
// per-workload monitor only ever talk to this interface.
//
// Lifecycle, as the monitor drives it:
//
//	p, err := rt.Create(ctx, id, bundle, stdio) // bundle = dir with config.json and rootfs
//	err = rt.Start(ctx, id)                     // the user's process runs from here on
//	st, err := p.Wait(ctx)                      // exit status, after all output is drained
//	err = rt.Delete(ctx, id)                    // frees what the backend holds (cgroups, VM)
//
// Kill may be called at any point after Create; Exec only while running.
package runtime

import (
	"context"
	"io"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// IO is where a process's standard streams go. Backends copy between these
// and the process; Wait returns only after Stdout/Stderr have been drained.
type IO struct {
	// Stdin, when not nil, feeds the process; its EOF closes the process's stdin.
	Stdin io.Reader
	// Stdout receives standard output (and everything, when Terminal is set).
	Stdout io.Writer
	// Stderr receives standard error; unused when Terminal is set.
	Stderr io.Writer
	// Terminal gives the process a pseudo-terminal.
	Terminal bool
	// Size is the terminal's initial size, when Terminal is set and known.
	Size *ConsoleSize
}

// ConsoleSize is a terminal's size in characters.
type ConsoleSize struct {
	Width, Height uint16
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	// Code is the exit code, 128+N when the process was killed by signal N
	// (the shell's and Docker's convention).
	Code int
	// Signal is the signal that killed the process, 0 if it exited.
	Signal syscall.Signal
	// ExitedAt is when the backend saw the process end.
	ExitedAt time.Time
}

// Process is a running process inside a workload: its init or an exec.
type Process interface {
	// Pid is the host PID that stands for the process (the container's init,
	// or the QEMU process for a microVM's init); 0 if there is none.
	Pid() int
	// Wait blocks until the process ends and its output has been copied.
	Wait(ctx context.Context) (ExitStatus, error)
	// Signal delivers sig to the process.
	Signal(ctx context.Context, sig syscall.Signal) error
	// Resize changes the process's terminal size; an error if it has none.
	Resize(ctx context.Context, size ConsoleSize) error
}

// Status is a workload's state as the backend sees it.
type Status string

// The states a backend reports.
const (
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	StatusStopped Status = "stopped"
	StatusUnknown Status = "unknown"
)

// State is the backend's view of a workload.
type State struct {
	ID     string
	Status Status
	Pid    int
}

// Runtime is an isolation backend.
type Runtime interface {
	// Name says which backend (and binary) this is, e.g. "runc", "crun", "vm".
	Name() string
	// Create sets up the workload from the OCI bundle at bundle (config.json
	// plus the root filesystem it names) with stdio wired to io, without
	// running the user's process yet.
	Create(ctx context.Context, id, bundle string, stdio IO) (Process, error)
	// Start runs the init process created by Create.
	Start(ctx context.Context, id string) error
	// Exec runs another process in the running workload.
	Exec(ctx context.Context, id, execID string, proc *specs.Process, stdio IO) (Process, error)
	// Kill sends sig to the workload's init process (all processes if all).
	Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error
	// State reports the backend's view of the workload.
	State(ctx context.Context, id string) (State, error)
	// Delete releases everything the backend holds for the workload; with
	// force it kills a workload that still runs.
	Delete(ctx context.Context, id string, force bool) error
}
