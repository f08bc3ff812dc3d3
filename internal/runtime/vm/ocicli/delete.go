package ocicli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/berthdev/berth/internal/errdefs"
)

func deleteCommand(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete [--force] ID",
		Short: "Stop a VM's QEMU and virtiofsd and remove its state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rt, err := g.runtimeFor(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			id := args[0]
			if _, err := os.Stat(rt.Dir(id)); os.IsNotExist(err) {
				// runc's wording: engines match on "does not exist".
				return fmt.Errorf("container %s does not exist: %w", id, errdefs.ErrNotFound)
			}
			return rt.Delete(cmd.Context(), id, force)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running VM")
	return cmd
}
