// Command berth-vm is a runc-compatible OCI runtime that runs bundles as
// QEMU microVMs; see package ocicli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/berthdev/berth/internal/runtime/vm/ocicli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := ocicli.Command().ExecuteContext(ctx)
	stop()
	os.Exit(ocicli.ExitCode(err))
}
