// Command berth runs OCI images as Linux containers or microVMs.
package main

import (
	"context"
	"os"

	"github.com/berthdev/berth/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:]))
}
