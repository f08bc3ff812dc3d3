package engine

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/runtime/oci"
)

// vmRuntimeName is the Runtime recorded for microVM workloads.
const vmRuntimeName = "vm"

// resolveRuntime picks the backend for a new workload: the VM backend for
// --isolation=vm, else the OCI runtime named by --runtime, the config file,
// or the probe's cached choice.
func (e *Engine) resolveRuntime(ctx context.Context, cfg *state.Config) (string, error) {
	if cfg.Isolation == state.IsolationVM {
		return vmRuntimeName, nil
	}
	name := cfg.Runtime
	if name == "" {
		name = e.cfg.Runtime
	}
	if name == "" {
		info, err := e.RuntimeInfo(ctx)
		if err != nil {
			return "", err
		}
		return info.Chosen, nil
	}
	// Fail at create, not in the monitor, when the binary is missing.
	if _, err := oci.New(name, e.ociRuntimeRoot()); err != nil {
		return "", err
	}
	return name, nil
}

// RuntimeInfo says which OCI runtime berth uses by default and why.
type RuntimeInfo struct {
	Chosen string `json:"chosen"`
	Reason string `json:"reason"`
}

// RuntimeInfo probes (once; the answer is cached) the default OCI runtime.
func (e *Engine) RuntimeInfo(ctx context.Context) (RuntimeInfo, error) {
	if e.cfg.Runtime != "" {
		return RuntimeInfo{Chosen: e.cfg.Runtime, Reason: "set in the config file"}, nil
	}
	chosen, reason, err := oci.Probe(ctx, []string{"crun", "runc"}, filepath.Join(e.stateDir, "runtime-probe.json"))
	if err != nil {
		return RuntimeInfo{}, fmt.Errorf("find a working OCI runtime: %w", err)
	}
	return RuntimeInfo{Chosen: chosen, Reason: reason}, nil
}

// backend builds the runtime backend a workload was created with.
func (e *Engine) backend(c *state.Container) (runtime.Runtime, error) {
	if c.Runtime == vmRuntimeName {
		return e.vmBackend(c)
	}
	rt, err := oci.New(c.Runtime, e.ociRuntimeRoot())
	if err != nil {
		return nil, err
	}
	return rt, nil
}
