package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
)

// Store is an image store rooted at one directory. Every method opens the
// bbolt index and takes the store's file lock for the duration of the call
// only, so several berth processes can share one store.
//
// Layout of the root:
//
//	oci-layout, blobs/sha256/<hex>   verified blobs (an OCI image layout)
//	images.db                        bbolt: image records and tags
//	layers/<diffid-hex>/             unpacked layers (overlay lower dirs)
//	tmp/                             scratch space for archives being loaded
//	lock                             flock: shared for writers, exclusive for GC
type Store struct {
	root string
}

// Image describes one stored image.
type Image struct {
	ID       v1.Hash   // config digest (Docker "image ID")
	Digest   v1.Hash   // manifest digest
	RepoTags []string  // full normalised names, e.g. "docker.io/library/busybox:latest"
	Created  time.Time // from the config
	Size     int64     // sum of compressed layer sizes + config
	Config   v1.ConfigFile
	DiffIDs  []v1.Hash
}

// record is what images.db holds per image, keyed by image ID.
type record struct {
	ID      v1.Hash   `json:"id"`
	Digest  v1.Hash   `json:"digest"`
	Layers  []v1.Hash `json:"layers"` // compressed layer digests, bottom→top
	DiffIDs []v1.Hash `json:"diffIDs"`
	Size    int64     `json:"size"`
}

var (
	bucketImages = []byte("images") // image ID → record JSON
	bucketTags   = []byte("tags")   // full tag name → image ID
)

// dbTimeout bounds how long a call waits for another process holding images.db.
const dbTimeout = 30 * time.Second

// Open opens (creating if needed) the store rooted at root.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open image store %s: %w", root, err)
	}
	s := &Store{root: abs}
	for _, d := range []string{s.blobDir(), s.layerDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open image store %s: %w", root, err)
		}
	}
	// layers/ must be traversable by container processes running as other users.
	if err := os.Chmod(s.layerDir(), 0o711); err != nil {
		return nil, fmt.Errorf("open image store %s: %w", root, err)
	}
	layoutFile := filepath.Join(abs, "oci-layout")
	if _, err := os.Stat(layoutFile); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(layoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
			return nil, fmt.Errorf("open image store %s: %w", root, err)
		}
	}
	// Create the database once; later opens (every berth command) must not
	// pay for a write transaction and its fsync.
	if _, err := os.Stat(filepath.Join(abs, "images.db")); err != nil {
		if err := s.update(context.Background(), func(tx *bolt.Tx) error { return nil }); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Store) blobDir() string  { return filepath.Join(s.root, "blobs", "sha256") }
func (s *Store) layerDir() string { return filepath.Join(s.root, "layers") }
func (s *Store) tmpDir() string   { return filepath.Join(s.root, "tmp") }

func (s *Store) blobPath(h v1.Hash) string { return filepath.Join(s.blobDir(), h.Hex) }

// withDB opens images.db for one transaction.
func (s *Store) withDB(ctx context.Context, write bool, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	db, err := bolt.Open(filepath.Join(s.root, "images.db"), 0o600, &bolt.Options{Timeout: dbTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return fmt.Errorf("open image index %s: %w: %w", s.root, errdefs.ErrUnavailable, err)
		}
		return fmt.Errorf("open image index %s: %w", s.root, err)
	}
	defer db.Close()
	if !write {
		return db.View(fn)
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketImages, bucketTags} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return fn(tx)
	})
}

func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	return s.withDB(ctx, false, fn)
}

func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	return s.withDB(ctx, true, fn)
}

// lock takes the store-wide flock: shared (unix.LOCK_SH) while blobs are
// written or layers unpacked, exclusive (unix.LOCK_EX) while garbage is
// collected. It polls so that ctx can cancel the wait.
func (s *Store) lock(ctx context.Context, how int) (func(), error) {
	return flockFile(ctx, filepath.Join(s.root, "lock"), how)
}

func flockFile(ctx context.Context, path string, how int) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func getRecord(tx *bolt.Tx, id string) (*record, error) {
	b := tx.Bucket(bucketImages)
	if b == nil {
		return nil, nil
	}
	v := b.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("read image record %s: %w: %w", id, errdefs.ErrCorrupt, err)
	}
	return &r, nil
}

func putRecord(tx *bolt.Tx, r *record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketImages).Put([]byte(r.ID.String()), v)
}

func allRecords(tx *bolt.Tx) ([]*record, error) {
	b := tx.Bucket(bucketImages)
	if b == nil {
		return nil, nil
	}
	var out []*record
	err := b.ForEach(func(k, v []byte) error {
		var r record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("read image record %s: %w: %w", k, errdefs.ErrCorrupt, err)
		}
		out = append(out, &r)
		return nil
	})
	return out, err
}

// tagsOf returns the tags pointing at image id, sorted.
func tagsOf(tx *bolt.Tx, id string) []string {
	var tags []string
	if b := tx.Bucket(bucketTags); b != nil {
		_ = b.ForEach(func(k, v []byte) error {
			if string(v) == id {
				tags = append(tags, string(k))
			}
			return nil
		})
	}
	sort.Strings(tags)
	return tags
}

// refKind says how a reference string was resolved.
type refKind int

const (
	byID refKind = iota
	byDigest
	byName
)

// resolve finds the record a reference names: an image ID (full or ≥12 hex
// prefix, with or without "sha256:"), name@digest (manifest digest), or a tag.
// For byName it also returns the normalised tag.
func resolve(tx *bolt.Tx, ref string) (*record, refKind, string, error) {
	notFound := fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	if hexID, ok := idPrefix(ref); ok {
		var match []byte
		if b := tx.Bucket(bucketImages); b != nil {
			c := b.Cursor()
			prefix := []byte("sha256:" + hexID)
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				if match != nil {
					return nil, 0, "", fmt.Errorf("image ID prefix %q is ambiguous: %w", ref, errdefs.ErrConflict)
				}
				match = append([]byte(nil), k...)
			}
		}
		if match != nil {
			r, err := getRecord(tx, string(match))
			return r, byID, "", err
		}
		if strings.HasPrefix(ref, "sha256:") {
			if len(hexID) == 64 {
				if r, err := byManifest(tx, "sha256:"+hexID); r != nil || err != nil {
					return r, byDigest, "", err
				}
			}
			return nil, 0, "", notFound
		}
		// A 12+ hex string can also be a repository name; fall through.
	}
	full, err := Normalize(ref)
	if err != nil {
		return nil, 0, "", err
	}
	if i := strings.LastIndex(full, "@"); i >= 0 {
		r, err := byManifest(tx, full[i+1:])
		if err != nil {
			return nil, 0, "", err
		}
		if r == nil {
			return nil, 0, "", notFound
		}
		return r, byDigest, "", nil
	}
	var id []byte
	if b := tx.Bucket(bucketTags); b != nil {
		id = b.Get([]byte(full))
	}
	if id == nil {
		return nil, 0, "", notFound
	}
	r, err := getRecord(tx, string(id))
	if err != nil {
		return nil, 0, "", err
	}
	if r == nil {
		return nil, 0, "", fmt.Errorf("image %q: tag points at missing image %s: %w", ref, id, errdefs.ErrCorrupt)
	}
	return r, byName, full, nil
}

func byManifest(tx *bolt.Tx, digest string) (*record, error) {
	recs, err := allRecords(tx)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.Digest.String() == digest {
			return r, nil
		}
	}
	return nil, nil
}

// image builds the public Image for a record, reading its config blob.
func (s *Store) image(r *record, tags []string) (*Image, error) {
	raw, err := os.ReadFile(s.blobPath(r.ID))
	if err != nil {
		return nil, fmt.Errorf("read config of image %s: %w: %w", r.ID, errdefs.ErrCorrupt, err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse config of image %s: %w: %w", r.ID, errdefs.ErrCorrupt, err)
	}
	return &Image{
		ID:       r.ID,
		Digest:   r.Digest,
		RepoTags: tags,
		Created:  cfg.Created.Time,
		Size:     r.Size,
		Config:   *cfg,
		DiffIDs:  r.DiffIDs,
	}, nil
}

// Get returns the image named by ref: name[:tag], a full or short (≥12 hex)
// image ID with or without "sha256:", or name@sha256:<manifest digest>.
// An unknown ref gives an error wrapping errdefs.ErrNotFound.
func (s *Store) Get(ctx context.Context, ref string) (*Image, error) {
	var (
		r    *record
		tags []string
	)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		r, _, _, err = resolve(tx, ref)
		if err != nil {
			return err
		}
		tags = tagsOf(tx, r.ID.String())
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s.image(r, tags)
}

// List returns every stored image, newest first.
func (s *Store) List(ctx context.Context) ([]*Image, error) {
	var (
		recs []*record
		tags = map[string][]string{}
	)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		if recs, err = allRecords(tx); err != nil {
			return err
		}
		for _, r := range recs {
			tags[r.ID.String()] = tagsOf(tx, r.ID.String())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*Image, 0, len(recs))
	for _, r := range recs {
		img, err := s.image(r, tags[r.ID.String()])
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Tag makes dst (a name[:tag]) point at the image src names. A tag that
// pointed elsewhere is moved; the old image stays, possibly untagged.
func (s *Store) Tag(ctx context.Context, src, dst string) error {
	full, err := normalizeTag(dst)
	if err != nil {
		return fmt.Errorf("tag %s as %s: %w", src, dst, err)
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		r, _, _, err := resolve(tx, src)
		if err != nil {
			return fmt.Errorf("tag %s as %s: %w", src, dst, err)
		}
		return tx.Bucket(bucketTags).Put([]byte(full), []byte(r.ID.String()))
	})
}

// Untag removes the tag ref. The image itself stays, even with no tags left;
// use Remove for docker rmi semantics.
func (s *Store) Untag(ctx context.Context, ref string) error {
	full, err := normalizeTag(ref)
	if err != nil {
		return fmt.Errorf("untag %s: %w", ref, err)
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTags)
		if b.Get([]byte(full)) == nil {
			return fmt.Errorf("untag %s: %w", ref, errdefs.ErrNotFound)
		}
		return b.Delete([]byte(full))
	})
}

// Remove implements docker rmi. By name it removes that tag and deletes the
// image when no tag is left. By ID or digest it deletes the image and all its
// tags; an image with several tags is then an ErrConflict unless force is set.
// Blobs and unpacked layers no longer referenced by any image are deleted.
// It returns the tags removed and the deleted hashes: the image ID first, then
// the DiffIDs of layers no other image uses.
//
// Remove does not know about containers: the caller must refuse (or force)
// removal of images whose layers are mounted or used by containers.
func (s *Store) Remove(ctx context.Context, ref string, force bool) (untagged []string, deleted []v1.Hash, err error) {
	unlock, err := s.lock(ctx, unix.LOCK_EX)
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	var gone *record
	err = s.update(ctx, func(tx *bolt.Tx) error {
		r, kind, full, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		tb := tx.Bucket(bucketTags)
		tags := tagsOf(tx, r.ID.String())
		if kind == byName {
			if err := tb.Delete([]byte(full)); err != nil {
				return err
			}
			untagged = []string{full}
			if len(tags) > 1 {
				return nil
			}
		} else {
			if len(tags) > 1 && !force {
				return fmt.Errorf("remove image %s: it is tagged %d times (%s); remove the tags or force: %w",
					ref, len(tags), strings.Join(tags, ", "), errdefs.ErrConflict)
			}
			for _, t := range tags {
				if err := tb.Delete([]byte(t)); err != nil {
					return err
				}
			}
			untagged = tags
		}
		gone = r
		return tx.Bucket(bucketImages).Delete([]byte(r.ID.String()))
	})
	if err != nil {
		return nil, nil, fmt.Errorf("remove image %s: %w", ref, err)
	}
	if gone == nil {
		return untagged, nil, nil
	}
	deleted = []v1.Hash{gone.ID}
	inUse, err := s.collect(ctx)
	if err != nil {
		return untagged, deleted, fmt.Errorf("remove image %s: %w", ref, err)
	}
	seen := map[v1.Hash]bool{}
	for _, d := range gone.DiffIDs {
		if !inUse[d] && !seen[d] {
			seen[d] = true
			deleted = append(deleted, d)
		}
	}
	return untagged, deleted, nil
}

// collect deletes every blob, unpacked layer and scratch file that no image
// references. The caller holds the exclusive store lock. It returns the set
// of DiffIDs still referenced.
func (s *Store) collect(ctx context.Context) (map[v1.Hash]bool, error) {
	blobs := map[string]bool{}
	diffIDs := map[v1.Hash]bool{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		recs, err := allRecords(tx)
		for _, r := range recs {
			blobs[r.ID.Hex], blobs[r.Digest.Hex] = true, true
			for _, l := range r.Layers {
				blobs[l.Hex] = true
			}
			for _, d := range r.DiffIDs {
				diffIDs[d] = true
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var errs []error
	ents, err := os.ReadDir(s.blobDir())
	if err != nil {
		return nil, fmt.Errorf("garbage-collect blobs: %w", err)
	}
	for _, e := range ents {
		if !blobs[e.Name()] {
			errs = append(errs, os.RemoveAll(filepath.Join(s.blobDir(), e.Name())))
		}
	}
	ents, err = os.ReadDir(s.layerDir())
	if err != nil {
		return nil, fmt.Errorf("garbage-collect layers: %w", err)
	}
	for _, e := range ents {
		if !diffIDs[v1.Hash{Algorithm: "sha256", Hex: e.Name()}] {
			errs = append(errs, os.RemoveAll(filepath.Join(s.layerDir(), e.Name())))
		}
	}
	ents, _ = os.ReadDir(s.tmpDir())
	for _, e := range ents {
		errs = append(errs, os.RemoveAll(filepath.Join(s.tmpDir(), e.Name())))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("garbage-collect image store %s: %w", s.root, err)
	}
	return diffIDs, nil
}

// cleanup runs after a failed write: it waits for the exclusive lock, so no
// other writer is between writing blobs and registering them, and deletes
// whatever the failed write left unreferenced.
func (s *Store) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	unlock, err := s.lock(ctx, unix.LOCK_EX)
	if err != nil {
		return
	}
	defer unlock()
	_, _ = s.collect(ctx)
}
