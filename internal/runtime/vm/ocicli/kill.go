package ocicli

import (
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berthdev/berth/internal/runtime"
)

// parseSignal accepts 15, TERM or SIGTERM (runtime.ParseSignal), and 0,
// which runc's kill takes as "is it alive".
func parseSignal(s string) (syscall.Signal, error) {
	if s == "0" {
		return 0, nil
	}
	return runtime.ParseSignal(s)
}

func killCommand(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "kill ID [SIGNAL]",
		Short: "Signal a VM's process (default SIGTERM)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig := syscall.SIGTERM
			if len(args) == 2 {
				var err error
				if sig, err = parseSignal(args[1]); err != nil {
					return err
				}
			}
			rt, err := g.runtimeFor(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return rt.Kill(cmd.Context(), args[0], sig, all)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "signal every process in the VM")
	return cmd
}
