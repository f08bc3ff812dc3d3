// Package registryd is the command line of berth-registry, the embedded OCI
// registry (`berth registry serve|gc` runs it). It is a binary of its own so
// that the distribution library stays out of berth's start-up path.
package registryd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/registry/server"
	"github.com/spf13/cobra"
)

// Main runs berth-registry with args and returns its exit status.
func Main(ctx context.Context, args []string) int {
	root := os.Getenv("BERTH_ROOT")
	if root == "" {
		root = "/var/lib/berth"
	}
	cmd := &cobra.Command{Use: "berth-registry", Short: "berth's embedded OCI registry", SilenceUsage: true, SilenceErrors: true}
	var cfg server.Config
	var verbose bool
	serve := &cobra.Command{
		Use:   "serve [--addr 127.0.0.1:5000] [--root DIR] [--htpasswd FILE] [--tls-cert F --tls-key F]",
		Short: "Serve an OCI distribution registry (filesystem storage) until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Root == "" {
				cfg.Root = root + "/registry"
			}
			if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
				return fmt.Errorf("--tls-cert and --tls-key go together: %w", errdefs.ErrInvalidArgument)
			}
			if verbose {
				cfg.Log = os.Stderr
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := server.New(ctx, cfg)
			if err != nil {
				return err
			}
			fmt.Printf("berth registry serving %s on %s\n", cfg.Root, srv.Addr())
			if err := srv.Serve(ctx); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		},
	}
	serve.Flags().StringVar(&cfg.Addr, "addr", "127.0.0.1:5000", "address to listen on")
	serve.Flags().StringVar(&cfg.Root, "root", "", "storage directory (default: $BERTH_ROOT/registry)")
	serve.Flags().StringVar(&cfg.Htpasswd, "htpasswd", "", "bcrypt htpasswd file: require basic auth")
	serve.Flags().StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate (PEM)")
	serve.Flags().StringVar(&cfg.TLSKey, "tls-key", "", "TLS key (PEM)")
	serve.Flags().BoolVarP(&verbose, "verbose", "v", false, "log every request")

	var gcRoot string
	var dryRun, untagged bool
	gc := &cobra.Command{
		Use:   "gc [--root DIR] [--dry-run] [--delete-untagged]",
		Short: "Remove blobs that no manifest references (stop the registry first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if gcRoot == "" {
				gcRoot = root + "/registry"
			}
			var opts []server.GCOption
			if untagged {
				opts = append(opts, server.WithRemoveUntagged())
			}
			res, err := server.GC(cmd.Context(), gcRoot, dryRun, opts...)
			if err != nil {
				return err
			}
			fmt.Printf("blobs: %d before, %d after; %d bytes freed\n", res.BlobsBefore, res.BlobsAfter, res.BytesFreed)
			return nil
		},
	}
	gc.Flags().StringVar(&gcRoot, "root", "", "storage directory (default: $BERTH_ROOT/registry)")
	gc.Flags().BoolVar(&dryRun, "dry-run", false, "only report")
	gc.Flags().BoolVar(&untagged, "delete-untagged", false, "also remove manifests no tag points at")
	cmd.AddCommand(serve, gc)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "berth registry:", err)
		return 1
	}
	return 0
}
