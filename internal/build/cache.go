package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	bolt "go.etcd.io/bbolt"

	"github.com/berthdev/berth/internal/errdefs"
)

// cache keeps what steps produced, across builds and processes.
//
// Layout of its root:
//
//	cache.db              bbolt: step cache key → entry (the state after the step)
//	blobs/<digest-hex>    gzip layer blobs of built layers
//	layers/<diffid-hex>/  the same layers unpacked, in overlay form, used as lower dirs
//	tmp/                  blobs being written
//
// Entries refer to blobs and layer dirs; an entry whose layers are gone is
// a miss. Base image layers stay in the image store and are named by the
// base image's ID.
type cache struct {
	root string
}

// entry is the state after a step: the image config and the layers so far.
type entry struct {
	Config json.RawMessage `json:"config"`
	Layers []layerRef      `json:"layers"`
}

// layerRef is one layer of a build state.
type layerRef struct {
	Digest    v1.Hash         `json:"digest"`
	DiffID    v1.Hash         `json:"diffID"`
	Size      int64           `json:"size"`
	MediaType types.MediaType `json:"mediaType"`
	// Image is the stored image the layer comes from; nil for a layer this
	// builder made (kept in the cache's blobs/ and layers/).
	Image *v1.Hash `json:"image,omitempty"`
}

var bucketSteps = []byte("steps")

const cacheTimeout = 30 * time.Second

func openCache(root string) (*cache, error) {
	c := &cache{root: root}
	for _, d := range []string{c.root, filepath.Join(c.root, "blobs"), filepath.Join(c.root, "layers"), filepath.Join(c.root, "tmp")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("open build cache %s: %w", root, err)
		}
	}
	return c, nil
}

func (c *cache) blobPath(digest v1.Hash) string { return filepath.Join(c.root, "blobs", digest.Hex) }
func (c *cache) layerDir(diffID v1.Hash) string { return filepath.Join(c.root, "layers", diffID.Hex) }
func (c *cache) tmpDir() string                 { return filepath.Join(c.root, "tmp") }

func (c *cache) withDB(ctx context.Context, write bool, fn func(b *bolt.Bucket) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	db, err := bolt.Open(filepath.Join(c.root, "cache.db"), 0o600, &bolt.Options{Timeout: cacheTimeout, NoFreelistSync: true})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return fmt.Errorf("open build cache: %w: %w", errdefs.ErrUnavailable, err)
		}
		return fmt.Errorf("open build cache: %w", err)
	}
	defer db.Close()
	if !write {
		return db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketSteps)
			if b == nil {
				return nil
			}
			return fn(b)
		})
	}
	return db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketSteps)
		if err != nil {
			return err
		}
		return fn(b)
	})
}

// get returns the entry for key, or nil when there is none or its layers
// are gone.
func (c *cache) get(ctx context.Context, key string) (*entry, error) {
	var e *entry
	err := c.withDB(ctx, false, func(b *bolt.Bucket) error {
		if b == nil {
			return nil
		}
		v := b.Get([]byte(key))
		if v == nil {
			return nil
		}
		e = &entry{}
		if err := json.Unmarshal(v, e); err != nil {
			e = nil // a bad entry is a miss; it is overwritten
		}
		return nil
	})
	if err != nil || e == nil {
		return nil, err
	}
	for _, l := range e.Layers {
		if l.Image == nil && !c.hasLayer(l) {
			return nil, nil
		}
	}
	return e, nil
}

// put records entries in one transaction.
func (c *cache) put(ctx context.Context, entries map[string]*entry) error {
	if len(entries) == 0 {
		return nil
	}
	return c.withDB(ctx, true, func(b *bolt.Bucket) error {
		for k, e := range entries {
			v, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// hasLayer says whether a built layer's blob and unpacked dir are there.
func (c *cache) hasLayer(l layerRef) bool {
	if _, err := os.Stat(c.blobPath(l.Digest)); err != nil {
		return false
	}
	fi, err := os.Stat(c.layerDir(l.DiffID))
	return err == nil && fi.IsDir()
}
