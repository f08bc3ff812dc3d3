package ocicli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"
)

func createCommand(g *globals) *cobra.Command {
	var bundle, pidFile, consoleSocket string
	var preserveFDs int
	var noPivot, noNewKeyring bool
	cmd := &cobra.Command{
		Use:   "create [--bundle DIR] [--pid-file FILE] [--console-socket SOCK] ID",
		Short: "Boot the VM for a bundle, ready to start its process",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			abs, err := filepath.Abs(bundle)
			if err != nil {
				return err
			}
			holderArgs := []string{"holder", "--bundle", abs}
			if consoleSocket != "" {
				holderArgs = append(holderArgs, "--console-socket", consoleSocket)
			}
			pid, err := spawnHolder(g, append(holderArgs, args[0]))
			if err != nil {
				return fmt.Errorf("create %s: %w", args[0], err)
			}
			return writePidFile(pidFile, pid)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&bundle, "bundle", "b", ".", "bundle directory")
	f.StringVar(&pidFile, "pid-file", "", "file to write the holder's PID to (it exits with the workload's code)")
	f.StringVar(&consoleSocket, "console-socket", "", "unix socket to send the terminal's master to")
	f.IntVar(&preserveFDs, "preserve-fds", 0, "ignored: descriptors cannot cross into a VM")
	f.BoolVar(&noPivot, "no-pivot", false, "ignored")
	f.BoolVar(&noNewKeyring, "no-new-keyring", false, "ignored")
	return cmd
}
