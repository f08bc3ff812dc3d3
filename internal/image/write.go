package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"golang.org/x/sync/errgroup"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
)

// pending is one image to ingest with its normalised tags.
type pending struct {
	img  v1.Image
	tags []string
}

// Write stores img, verifying every blob against its digest and every layer
// against its DiffID, and points tags at it. Nothing is registered unless
// every blob verifies; on failure the store is left as it was.
func (s *Store) Write(ctx context.Context, img v1.Image, tags ...string) (*Image, error) {
	p := pending{img: img}
	for _, t := range tags {
		full, err := normalizeTag(t)
		if err != nil {
			return nil, fmt.Errorf("write image: %w", err)
		}
		p.tags = append(p.tags, full)
	}
	imgs, err := s.ingest(ctx, []pending{p})
	if err != nil {
		return nil, err
	}
	return imgs[0], nil
}

// ingest writes the blobs of every pending image, then registers them all in
// one transaction: all or nothing.
func (s *Store) ingest(ctx context.Context, items []pending) ([]*Image, error) {
	unlock, err := s.lock(ctx, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	imgs, err := s.ingestLocked(ctx, items)
	unlock()
	if err != nil {
		s.cleanup()
	}
	return imgs, err
}

// ingestLocked is ingest for a caller holding the shared store lock; on
// error the caller runs cleanup once it has released the lock.
func (s *Store) ingestLocked(ctx context.Context, items []pending) (_ []*Image, err error) {
	recs := make([]*record, len(items))
	for i, it := range items {
		if recs[i], err = s.writeBlobs(ctx, it.img); err != nil {
			return nil, err
		}
	}
	tags := make([][]string, len(items))
	err = s.update(ctx, func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTags)
		for i, r := range recs {
			if err := putRecord(tx, r); err != nil {
				return err
			}
			for _, t := range items[i].tags {
				if err := tb.Put([]byte(t), []byte(r.ID.String())); err != nil {
					return err
				}
			}
		}
		for i, r := range recs {
			tags[i] = tagsOf(tx, r.ID.String())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("register images: %w", err)
	}
	out := make([]*Image, len(recs))
	for i, r := range recs {
		if out[i], err = s.image(r, tags[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// writeBlobs stores the layers, config and manifest of img and returns its record.
func (s *Store) writeBlobs(ctx context.Context, img v1.Image) (*record, error) {
	rawMan, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("write image: read manifest: %w", err)
	}
	manDigest := sha256Hash(rawMan)
	if d, err := img.Digest(); err != nil || d != manDigest {
		return nil, fmt.Errorf("write image %s: %w: manifest digest %s does not match its content", manDigest, errdefs.ErrCorrupt, d)
	}
	man, err := v1.ParseManifest(bytes.NewReader(rawMan))
	if err != nil {
		return nil, fmt.Errorf("write image %s: %w: parse manifest: %w", manDigest, errdefs.ErrCorrupt, err)
	}
	mt := man.MediaType
	if mt == "" {
		if mt, err = img.MediaType(); err != nil {
			return nil, fmt.Errorf("write image %s: %w", manDigest, err)
		}
	}
	if mt != types.OCIManifestSchema1 && mt != types.DockerManifestSchema2 {
		return nil, fmt.Errorf("write image %s: unsupported manifest media type %q: %w", manDigest, mt, errdefs.ErrInvalidArgument)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("write image %s: read config: %w", manDigest, err)
	}
	id := man.Config.Digest
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return nil, fmt.Errorf("write image %s: %w: parse config: %w", id, errdefs.ErrCorrupt, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(man.Layers) {
		return nil, fmt.Errorf("write image %s: %w: config lists %d diff IDs for %d layers",
			id, errdefs.ErrCorrupt, len(cfg.RootFS.DiffIDs), len(man.Layers))
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("write image %s: %w", id, err)
	}
	if len(layers) != len(man.Layers) {
		return nil, fmt.Errorf("write image %s: %w: %d layers for %d manifest entries", id, errdefs.ErrCorrupt, len(layers), len(man.Layers))
	}
	rec := &record{ID: id, Digest: manDigest, DiffIDs: cfg.RootFS.DiffIDs, Size: man.Config.Size}
	// Layers are copied, hashed and their diff IDs checked in parallel: on
	// a pull that is most of the time after the download.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	seen := map[v1.Hash]bool{}
	for i, l := range layers {
		desc := man.Layers[i]
		rec.Layers = append(rec.Layers, desc.Digest)
		rec.Size += desc.Size
		if seen[desc.Digest] || s.hasBlob(desc.Digest) {
			continue // verified when it was written
		}
		seen[desc.Digest] = true
		diffID := cfg.RootFS.DiffIDs[i]
		g.Go(func() error {
			rc, err := l.Compressed()
			if err != nil {
				return fmt.Errorf("write image %s: read layer %s: %w", id, desc.Digest, err)
			}
			err = s.putBlob(gctx, desc.Digest, desc.Size, rc)
			rc.Close()
			if err != nil {
				return fmt.Errorf("write image %s: %w", id, err)
			}
			if err := s.verifyDiffID(gctx, desc, diffID); err != nil {
				return fmt.Errorf("write image %s: %w", id, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := s.putBlob(ctx, id, man.Config.Size, bytes.NewReader(rawCfg)); err != nil {
		return nil, fmt.Errorf("write image %s: config: %w", id, err)
	}
	if err := s.putBlob(ctx, manDigest, -1, bytes.NewReader(rawMan)); err != nil {
		return nil, fmt.Errorf("write image %s: manifest: %w", id, err)
	}
	return rec, nil
}

// verifyDiffID checks that the decompressed content of a stored layer blob
// hashes to diffID, so a layer that lies about its content is refused at
// write time rather than at first run.
func (s *Store) verifyDiffID(ctx context.Context, desc v1.Descriptor, diffID v1.Hash) error {
	rc, err := s.uncompressed(desc)
	if err != nil {
		return fmt.Errorf("decompress layer %s: %w: %w", desc.Digest, errdefs.ErrCorrupt, err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, rc}); err != nil {
		return fmt.Errorf("decompress layer %s: %w: %w", desc.Digest, errdefs.ErrCorrupt, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID.String() {
		return fmt.Errorf("layer %s: %w: uncompressed digest %s, config says %s", desc.Digest, errdefs.ErrCorrupt, got, diffID)
	}
	return nil
}

func sha256Hash(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}
