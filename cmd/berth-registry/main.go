// Command berth-registry is berth's embedded OCI registry (berth registry serve|gc).
package main

import (
	"context"
	"os"

	"github.com/berthdev/berth/internal/registryd"
)

func main() {
	os.Exit(registryd.Main(context.Background(), os.Args[1:]))
}
