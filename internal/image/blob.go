package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
)

// ctxReader makes a long copy stop when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Has reports whether the blob with digest h (a layer, config or manifest)
// is in the store, so a pull can skip downloading it.
func (s *Store) Has(_ context.Context, h v1.Hash) bool { return s.hasBlob(h) }

// hasBlob reports whether blob h is stored.
func (s *Store) hasBlob(h v1.Hash) bool {
	fi, err := os.Lstat(s.blobPath(h))
	return err == nil && fi.Mode().IsRegular()
}

// putBlob stores r as blob h: it writes a temp file in the blob dir, hashing
// as it goes, fsyncs, and renames it into place only if the content's digest
// is h (and its size is size, when size ≥ 0). On mismatch nothing is left
// behind and the error wraps errdefs.ErrCorrupt.
func (s *Store) putBlob(ctx context.Context, h v1.Hash, size int64, r io.Reader) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return fmt.Errorf("write blob %s: unsupported digest: %w", h, errdefs.ErrCorrupt)
	}
	if _, err := hex.DecodeString(h.Hex); err != nil {
		return fmt.Errorf("write blob %s: malformed digest: %w", h, errdefs.ErrCorrupt)
	}
	if sf, ok := r.(*os.File); ok && strings.HasPrefix(sf.Name(), s.tmpDir()+string(os.PathSeparator)) {
		return s.linkBlob(ctx, h, size, sf)
	}
	f, err := os.CreateTemp(s.blobDir(), ".tmp-"+h.Hex[:12]+"-")
	if err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	hasher := sha256.New()
	// Network reads come in ~16 KiB pieces: batch them into 1 MiB writes.
	bw := bufio.NewWriterSize(f, 1<<20)
	n, err := io.Copy(io.MultiWriter(bw, hasher), ctxReader{ctx, r})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	got := hex.EncodeToString(hasher.Sum(nil))
	if got != h.Hex {
		return fmt.Errorf("write blob %s: %w: content has digest sha256:%s", h, errdefs.ErrCorrupt, got)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("write blob %s: %w: content is %d bytes, descriptor says %d", h, errdefs.ErrCorrupt, n, size)
	}
	if err := f.Chmod(0o444); err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	if err := os.Rename(f.Name(), s.blobPath(h)); err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	done = true
	return syncDir(s.blobDir())
}

// linkBlob stores a file that already lies in the store's own scratch
// space (a pull's staged layer) by hard-linking it into place once its
// content is verified: the same checks as putBlob without a second copy.
// Files from anywhere else are always copied, so that nobody outside the
// store holds a name for a blob's inode.
func (s *Store) linkBlob(ctx context.Context, h v1.Hash, size int64, f *os.File) error {
	hasher := sha256.New()
	n, err := io.Copy(hasher, ctxReader{ctx, f})
	if err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	if got := hex.EncodeToString(hasher.Sum(nil)); got != h.Hex {
		return fmt.Errorf("write blob %s: %w: content has digest sha256:%s", h, errdefs.ErrCorrupt, got)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("write blob %s: %w: content is %d bytes, descriptor says %d", h, errdefs.ErrCorrupt, n, size)
	}
	if err := f.Chmod(0o444); err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	if err := os.Link(f.Name(), s.blobPath(h)); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	return syncDir(s.blobDir())
}

func syncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func (s *Store) readBlob(h v1.Hash) ([]byte, error) {
	b, err := os.ReadFile(s.blobPath(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read blob %s: %w", h, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	return b, nil
}

// blobLayer is a stored blob seen as a partial.CompressedLayer; partial adds
// decompression (gzip, zstd or none) and the rest of v1.Layer.
type blobLayer struct {
	s    *Store
	desc v1.Descriptor
}

var _ partial.CompressedLayer = (*blobLayer)(nil)

func (l *blobLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *blobLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.s.blobPath(l.desc.Digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open layer blob %s: %w", l.desc.Digest, errdefs.ErrNotFound)
	}
	return f, err
}

// uncompressed opens the decompressed stream of a stored layer blob.
func (s *Store) uncompressed(desc v1.Descriptor) (io.ReadCloser, error) {
	l, err := partial.CompressedToLayer(&blobLayer{s: s, desc: desc})
	if err != nil {
		return nil, err
	}
	return l.Uncompressed()
}

// storedImage is a stored manifest seen as a partial.CompressedImageCore.
type storedImage struct {
	s         *Store
	rawMan    []byte
	rawConfig []byte
	man       *v1.Manifest
}

var _ partial.CompressedImageCore = (*storedImage)(nil)

func (i *storedImage) RawConfigFile() ([]byte, error) { return i.rawConfig, nil }
func (i *storedImage) RawManifest() ([]byte, error)   { return i.rawMan, nil }
func (i *storedImage) MediaType() (types.MediaType, error) {
	if i.man.MediaType != "" {
		return i.man.MediaType, nil
	}
	return types.OCIManifestSchema1, nil
}

func (i *storedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.man.Config.Digest {
		return &blobLayer{s: i.s, desc: i.man.Config}, nil
	}
	for _, d := range i.man.Layers {
		if d.Digest == h {
			return &blobLayer{s: i.s, desc: d}, nil
		}
	}
	return nil, fmt.Errorf("layer %s of image %s: %w", h, i.man.Config.Digest, errdefs.ErrNotFound)
}

func (s *Store) loadManifest(digest v1.Hash) ([]byte, *v1.Manifest, error) {
	raw, err := s.readBlob(digest)
	if err != nil {
		return nil, nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("parse manifest %s: %w: %w", digest, errdefs.ErrCorrupt, err)
	}
	return raw, m, nil
}

// v1Image returns the stored image with manifest digest as a v1.Image.
func (s *Store) v1Image(digest v1.Hash) (v1.Image, error) {
	raw, m, err := s.loadManifest(digest)
	if err != nil {
		return nil, err
	}
	cfg, err := s.readBlob(m.Config.Digest)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(&storedImage{s: s, rawMan: raw, rawConfig: cfg, man: m})
}

// V1Image returns the image ref names as a v1.Image reading from the store,
// for push and save. Its blobs are read lazily: removing the image while the
// result is in use makes later reads fail with ErrNotFound.
func (s *Store) V1Image(ctx context.Context, ref string) (v1.Image, error) {
	img, err := s.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	vi, err := s.v1Image(img.Digest)
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", ref, err)
	}
	return vi, nil
}

// blobSize is the size of a stored blob, for tar headers.
func (s *Store) blobSize(h v1.Hash) (int64, error) {
	fi, err := os.Stat(filepath.Join(s.blobDir(), h.Hex))
	if err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", h, err)
	}
	return fi.Size(), nil
}
