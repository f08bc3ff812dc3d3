// Package cli is berth's command line: one cobra verb per file. It parses
// flags, calls the engine and prints; it never touches backends or stores
// directly.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/berthdev/berth/internal/engine"
	"github.com/spf13/cobra"
)

// exitError carries a specific exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// withCode makes err end berth with the given status.
func withCode(code int, err error) error { return &exitError{code: code, err: err} }

type globals struct {
	root, state, config string
}

func (g *globals) engine(ctx context.Context) (*engine.Engine, error) {
	return engine.New(ctx, engine.Options{Root: g.root, State: g.state, ConfigFile: g.config})
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Main runs berth with args and returns the process exit status.
func Main(ctx context.Context, args []string) int {
	g := &globals{}
	root := &cobra.Command{
		Use:           "berth",
		Short:         "Run OCI images as containers or microVMs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.root, "root", envOr("BERTH_ROOT", engine.DefaultRoot), "durable data directory ($BERTH_ROOT)")
	root.PersistentFlags().StringVar(&g.state, "state", envOr("BERTH_STATE", engine.DefaultState), "runtime state directory ($BERTH_STATE)")
	root.PersistentFlags().StringVar(&g.config, "config", envOr("BERTH_CONFIG", engine.DefaultConfig), "configuration file ($BERTH_CONFIG)")

	root.AddCommand(
		runCmd(g), createCmd(g), startCmd(g), stopCmd(g), killCmd(g), restartCmd(g), rmCmd(g),
		psCmd(g), logsCmd(g), execCmd(g), waitCmd(g), inspectCmd(g), topCmd(g), statsCmd(g),
		containerCmd(g), imageCmd(g), imagesCmd(g), loadCmd(g), saveCmd(g), importCmd(g), tagCmd(g), rmiCmd(g),
		systemCmd(g), infoCmd(g), monitorCmd(g), buildCmd(g),
		pullCmd(g), pushCmd(g), loginCmd(g), logoutCmd(g), registryCmd(g),
		networkCmd(g), volumeCmd(g), portCmd(g),
	)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "berth:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "berth:", err)
	return 1
}
