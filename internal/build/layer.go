package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/berthdev/berth/internal/errdefs"
)

// commitLayer turns the changes of snapshot key (unmounted) into a built
// layer: a gzip blob in the cache and the upper dir moved into the cache's
// layers/ to serve as a lower dir. ok is false when nothing changed.
func (b *Builder) commitLayer(ctx context.Context, key string) (l layerRef, ok bool, err error) {
	upper := b.snaps.Upper(key)
	ents, err := os.ReadDir(upper)
	if err != nil {
		return layerRef{}, false, fmt.Errorf("read changes of %s: %w", key, err)
	}
	if len(ents) == 0 {
		return layerRef{}, false, nil
	}
	tmp, err := os.CreateTemp(b.cache.tmpDir(), "blob-")
	if err != nil {
		return layerRef{}, false, err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(b.snaps.Diff(ctx, key, pw)) }()
	diffH, compH := sha256.New(), sha256.New()
	counter := &countWriter{w: io.MultiWriter(tmp, compH)}
	gz, _ := gzip.NewWriterLevel(counter, gzip.DefaultCompression)
	_, err = io.Copy(io.MultiWriter(gz, diffH), pr)
	pr.CloseWithError(err)
	if err == nil {
		err = gz.Close()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if err != nil {
		return layerRef{}, false, fmt.Errorf("write layer of %s: %w", key, err)
	}
	l = layerRef{
		Digest:    v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(compH.Sum(nil))},
		DiffID:    v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diffH.Sum(nil))},
		Size:      counter.n,
		MediaType: types.OCILayer,
	}
	if err := os.Rename(tmp.Name(), b.cache.blobPath(l.Digest)); err != nil {
		return layerRef{}, false, fmt.Errorf("write layer of %s: %w", key, err)
	}
	dir := b.cache.layerDir(l.DiffID)
	if _, err := os.Stat(dir); err == nil {
		return l, true, nil // the same changes were made before
	}
	if err := os.Rename(upper, dir); err != nil && !errors.Is(err, os.ErrExist) {
		return layerRef{}, false, fmt.Errorf("keep layer %s: %w", l.DiffID, err)
	}
	return l, true, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// cachedLayer is a built layer's blob seen as a partial.CompressedLayer.
type cachedLayer struct {
	path string
	ref  layerRef
}

var _ partial.CompressedLayer = (*cachedLayer)(nil)

func (l *cachedLayer) Digest() (v1.Hash, error)            { return l.ref.Digest, nil }
func (l *cachedLayer) DiffID() (v1.Hash, error)            { return l.ref.DiffID, nil }
func (l *cachedLayer) Size() (int64, error)                { return l.ref.Size, nil }
func (l *cachedLayer) MediaType() (types.MediaType, error) { return l.ref.MediaType, nil }
func (l *cachedLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("layer %s: %w", l.ref.Digest, errdefs.ErrNotFound)
	}
	return f, err
}

// builtImage is the build's result as a partial.CompressedImageCore: an OCI
// manifest over the config and the state's layers.
type builtImage struct {
	rawConfig, rawManifest []byte
	layers                 map[v1.Hash]partial.CompressedLayer
}

func (i *builtImage) RawConfigFile() ([]byte, error)      { return i.rawConfig, nil }
func (i *builtImage) RawManifest() ([]byte, error)        { return i.rawManifest, nil }
func (i *builtImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (i *builtImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("layer %s: %w", h, errdefs.ErrNotFound)
}

// ociLayerType maps Docker layer media types to their OCI equivalents.
func ociLayerType(mt types.MediaType) types.MediaType {
	switch mt {
	case types.DockerLayer, "":
		return types.OCILayer
	case types.DockerUncompressedLayer:
		return types.OCIUncompressedLayer
	}
	return mt
}

// assemble makes the v1.Image of a final state.
func (r *run) assemble(ctx context.Context, st *stageState) (v1.Image, error) {
	cfg := st.cfg.DeepCopy()
	cfg.RootFS = v1.RootFS{Type: "layers"}
	man := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	core := &builtImage{layers: map[v1.Hash]partial.CompressedLayer{}}
	for _, l := range st.layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		man.Layers = append(man.Layers, v1.Descriptor{MediaType: ociLayerType(l.MediaType), Size: l.Size, Digest: l.Digest})
		if l.Image == nil {
			core.layers[l.Digest] = &cachedLayer{path: r.b.cache.blobPath(l.Digest), ref: l}
			continue
		}
		base, err := r.baseByID(ctx, *l.Image)
		if err != nil {
			return nil, err
		}
		bl, err := base.img.LayerByDigest(l.Digest)
		if err != nil {
			return nil, fmt.Errorf("layer %s of base image %s: %w", l.Digest, base.ref, err)
		}
		core.layers[l.Digest] = bl
	}
	if len(r.opts.Labels) > 0 {
		if cfg.Config.Labels == nil {
			cfg.Config.Labels = map[string]string{}
		}
		for k, v := range r.opts.Labels {
			cfg.Config.Labels[k] = v
		}
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	man.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(raw)), Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
	rawMan, err := json.Marshal(man)
	if err != nil {
		return nil, err
	}
	core.rawConfig, core.rawManifest = raw, rawMan
	return partial.CompressedToImage(core)
}

// configOf decodes a cache entry's config.
func configOf(raw []byte) (*v1.ConfigFile, error) {
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("build cache entry: %w: %w", errdefs.ErrCorrupt, err)
	}
	return cfg, nil
}
