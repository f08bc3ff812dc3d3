// Command registryd serves berth's embedded registry for the conformance
// and benchmark scripts until interrupted. It stands in for
// `berth registry serve` until the CLI has that verb.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/berthdev/berth/internal/registry/server"
)

func main() {
	var cfg server.Config
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:5000", "listen address")
	flag.StringVar(&cfg.Root, "root", "", "storage directory (required)")
	flag.StringVar(&cfg.Htpasswd, "htpasswd", "", "bcrypt htpasswd file enabling basic auth")
	flag.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate (PEM)")
	flag.StringVar(&cfg.TLSKey, "tls-key", "", "TLS key (PEM)")
	verbose := flag.Bool("v", false, "log requests to stderr")
	flag.Parse()
	if *verbose {
		cfg.Log = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "registryd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg server.Config) error {
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Println(srv.URL())
	return srv.Serve(ctx)
}
