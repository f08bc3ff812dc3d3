package ocicli

import (
	"encoding/json"
	"os"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"

	"github.com/berthdev/berth/internal/runtime"
)

func stateCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "state ID",
		Short: "Print the OCI state of a VM",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtimeFor(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			id := args[0]
			st, err := rt.State(cmd.Context(), id)
			if err != nil {
				return err
			}
			var h holderFile
			if b, err := os.ReadFile(holderPath(rt, id)); err == nil {
				_ = json.Unmarshal(b, &h)
			}
			out := specs.State{Version: specs.Version, ID: id, Bundle: h.Bundle, Annotations: h.Annotations}
			switch st.Status {
			case runtime.StatusCreated:
				out.Status = specs.StateCreated
			case runtime.StatusRunning:
				out.Status = specs.StateRunning
			case runtime.StatusStopped:
				out.Status = specs.StateStopped
			default:
				out.Status = specs.StateCreating
			}
			if h.Pid > 0 && syscall.Kill(h.Pid, 0) != nil && out.Status != specs.StateCreating {
				out.Status = specs.StateStopped
			}
			if out.Status != specs.StateStopped {
				out.Pid = h.Pid
			}
			state := struct {
				specs.State
				Created string `json:"created,omitempty"`
			}{State: out}
			if !h.Created.IsZero() {
				state.Created = h.Created.Format("2006-01-02T15:04:05.999999999Z")
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(state)
		},
	}
}
