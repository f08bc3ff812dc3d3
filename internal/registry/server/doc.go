// Package server runs an OCI distribution registry (the reference
// implementation, github.com/distribution/distribution/v3) over a local
// directory, with optional htpasswd authentication and TLS, and
// garbage-collects that directory.
//
// Typical use, as `berth registry serve` does:
//
//	srv, err := server.New(ctx, server.Config{Addr: "127.0.0.1:5000", Root: dir})
//	if err != nil { … }
//	fmt.Println("listening on", srv.Addr())
//	err = srv.Serve(ctx) // returns after ctx is cancelled and requests drain
//
// and `berth registry gc`, with the server stopped or read-only:
//
//	res, err := server.GC(ctx, dir, dryRun)
package server
