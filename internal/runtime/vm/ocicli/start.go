package ocicli

import (
	"github.com/spf13/cobra"
)

func startCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "start ID",
		Short: "Run the process of a created VM",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtimeFor(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return rt.Start(cmd.Context(), args[0])
		},
	}
}
