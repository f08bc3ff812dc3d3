package engine

import (
	"context"
	"fmt"

	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
)

// vmBackend builds the microVM backend for a workload.
func (e *Engine) vmBackend(c *state.Container) (runtime.Runtime, error) {
	return nil, fmt.Errorf("microVM isolation: %w", errdefs.ErrUnavailable)
}

// vmInfo describes the microVM set-up for `berth info`.
func (e *Engine) vmInfo(ctx context.Context) [][2]string { return nil }
