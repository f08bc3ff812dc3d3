// Command registrybench drives berth's registry client for bench/registry.sh:
//
//	registrybench gen  DIR SIZE_MB LAYERS   write a random image to an OCI layout
//	registrybench push DIR REF              push the layout's image, print seconds
//	registrybench pull REF DIR              pull into an OCI layout, print seconds
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berthdev/berth/internal/registry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "registrybench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) < 3 {
		return fmt.Errorf("usage: gen DIR SIZE_MB LAYERS | push DIR REF | pull REF DIR")
	}
	switch args[0] {
	case "gen":
		if len(args) != 4 {
			return fmt.Errorf("gen DIR SIZE_MB LAYERS")
		}
		mb, err1 := strconv.ParseInt(args[2], 10, 64)
		n, err2 := strconv.ParseInt(args[3], 10, 64)
		if err1 != nil || err2 != nil || n < 1 {
			return fmt.Errorf("gen: bad size or layer count")
		}
		img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		for range n {
			l, err := random.Layer(mb<<20/n, types.OCILayer)
			if err != nil {
				return err
			}
			if img, err = mutate.AppendLayers(img, l); err != nil {
				return err
			}
		}
		p, err := layout.Write(args[1], empty.Index)
		if err != nil {
			return err
		}
		return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "img"}))
	case "push":
		img, err := layoutImage(args[1])
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := registry.Push(ctx, args[2], img); err != nil {
			return err
		}
		fmt.Printf("%.3f\n", time.Since(start).Seconds())
		return nil
	case "pull":
		p, err := layout.Write(args[2], empty.Index)
		if err != nil {
			return err
		}
		store := registry.StoreFunc(func(_ context.Context, img v1.Image, _ ...string) error {
			return p.AppendImage(img)
		})
		start := time.Now()
		if _, err := registry.Pull(ctx, args[1], store); err != nil {
			return err
		}
		fmt.Printf("%.3f\n", time.Since(start).Seconds())
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func layoutImage(dir string) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) == 0 {
		return nil, fmt.Errorf("%s: empty layout", dir)
	}
	return idx.Image(im.Manifests[0].Digest)
}
