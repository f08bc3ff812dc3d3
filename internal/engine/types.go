package engine

import "github.com/berthdev/berth/internal/engine/state"

// The workload types callers use; they live in state so the database owns
// their encoding, and are re-exported here so callers need only the engine.
type (
	// Container is one workload's record.
	Container = state.Container
	// ContainerConfig is what the user asked for when creating a workload.
	ContainerConfig = state.Config
	// Isolation says how a workload runs.
	Isolation = state.Isolation
	// Status is a workload's lifecycle state.
	Status = state.Status
)

// Isolations and statuses, re-exported from state.
const (
	IsolationContainer = state.IsolationContainer
	IsolationVM        = state.IsolationVM
	StatusCreated      = state.StatusCreated
	StatusRunning      = state.StatusRunning
	StatusExited       = state.StatusExited
)
