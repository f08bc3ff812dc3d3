package engine

import (
	"context"

	"github.com/berthdev/berth/internal/cgroups"
)

// Info describes berth's set-up on this host, as key/value pairs in a
// stable order.
func (e *Engine) Info(ctx context.Context) ([][2]string, error) {
	out := [][2]string{
		{"Root Dir", e.root},
		{"State Dir", e.stateDir},
		{"Cgroup Version", cgroups.DetectMode().String()},
	}
	rt, err := e.RuntimeInfo(ctx)
	if err != nil {
		out = append(out, [2]string{"Default Runtime", "none: " + err.Error()})
	} else {
		out = append(out, [2]string{"Default Runtime", rt.Chosen}, [2]string{"Runtime Choice", rt.Reason})
	}
	out = append(out, e.vmInfo(ctx)...)
	return out, nil
}
