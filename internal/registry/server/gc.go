package server

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"

	"github.com/berthdev/berth/internal/errdefs"
)

// GCResult reports what a garbage collection removed.
type GCResult struct {
	// BlobsBefore and BlobsAfter count the blobs in the store; in a dry run
	// they are equal.
	BlobsBefore, BlobsAfter int
	// BytesFreed is the size of the blobs removed.
	BytesFreed int64
}

// GCOption configures GC.
type GCOption func(*gcOptions)

type gcOptions struct{ removeUntagged bool }

// WithRemoveUntagged also deletes manifests no tag points at, and then their
// blobs. Default: untagged manifests are kept.
func WithRemoveUntagged() GCOption { return func(o *gcOptions) { o.removeUntagged = true } }

// GC deletes the blobs of the registry under root that no manifest
// references, using distribution's mark-and-sweep collector. With dryRun it
// prints what it would delete to standard output (the library's report) and
// deletes nothing. Run it while no server uses root, or one with ReadOnly set:
// a push racing the sweep can lose blobs.
func GC(ctx context.Context, root string, dryRun bool, opts ...GCOption) (*GCResult, error) {
	var o gcOptions
	for _, opt := range opts {
		opt(&o)
	}
	if _, err := os.Stat(filepath.Join(root, "docker", "registry", "v2")); err != nil {
		return nil, fmt.Errorf("gc registry %s: no registry data: %w", root, errdefs.ErrNotFound)
	}
	if alg, err := foreignDigests(root); err != nil {
		return nil, fmt.Errorf("gc registry %s: %w", root, err)
	} else if alg != "" {
		// Blobs pushed by sha512 are stored under their sha256 digest and
		// linked; the collector marks only the digests manifests name and
		// would delete the sha256 copies.
		return nil, fmt.Errorf("gc registry %s: it holds %s-addressed content, which the collector would delete: %w",
			root, alg, errdefs.ErrConflict)
	}
	before, _, err := countBlobs(root)
	if err != nil {
		return nil, fmt.Errorf("gc registry %s: %w", root, err)
	}
	driver := filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 16})
	sizes, err := blobSizes(root)
	if err != nil {
		return nil, fmt.Errorf("gc registry %s: %w", root, err)
	}
	reg, err := storage.NewRegistry(ctx, driver, storage.EnableDelete)
	if err != nil {
		return nil, fmt.Errorf("gc registry %s: %w", root, err)
	}
	if err := storage.MarkAndSweep(ctx, driver, reg, storage.GCOpts{
		DryRun:         dryRun,
		RemoveUntagged: o.removeUntagged,
		Quiet:          !dryRun,
	}); err != nil {
		return nil, fmt.Errorf("gc registry %s: %w", root, err)
	}
	after, remaining, err := countBlobs(root)
	if err != nil {
		return nil, fmt.Errorf("gc registry %s: %w", root, err)
	}
	res := &GCResult{BlobsBefore: before, BlobsAfter: after}
	for d, size := range sizes {
		if _, ok := remaining[d]; !ok {
			res.BytesFreed += size
		}
	}
	return res, nil
}

func blobsDir(root string) string {
	return filepath.Join(root, "docker", "registry", "v2", "blobs")
}

// countBlobs lists the blob digests under root's blob store.
func countBlobs(root string) (int, map[string]struct{}, error) {
	sizes, err := blobSizes(root)
	if err != nil {
		return 0, nil, err
	}
	set := make(map[string]struct{}, len(sizes))
	for d := range sizes {
		set[d] = struct{}{}
	}
	return len(set), set, nil
}

// blobSizes maps "algo:hex" to the size of each stored blob.
func blobSizes(root string) (map[string]int64, error) {
	out := map[string]int64{}
	dir := blobsDir(root)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.IsDir() || d.Name() != "data" {
			return nil
		}
		rel, err := filepath.Rel(dir, filepath.Dir(path))
		if err != nil {
			return err
		}
		parts := strings.Split(rel, string(filepath.Separator)) // algo/xx/hex
		if len(parts) != 3 {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[parts[0]+":"+parts[2]] = fi.Size()
		return nil
	})
	return out, err
}

// foreignDigests returns a digest algorithm other than sha256 that a
// repository links content by, or "".
func foreignDigests(root string) (string, error) {
	repos := filepath.Join(root, "docker", "registry", "v2", "repositories")
	var found string
	err := filepath.WalkDir(repos, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() || found != "" {
			return nil
		}
		switch filepath.Base(filepath.Dir(path)) {
		case "_layers", "revisions":
			if d.Name() != "sha256" {
				found = d.Name()
			}
			return filepath.SkipDir
		}
		return nil
	})
	return found, err
}
