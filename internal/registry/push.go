package registry

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berthdev/berth/internal/errdefs"
)

// Push uploads img to the registry as ref and returns the manifest digest.
// Blobs the registry already has are skipped; with WithMountFrom, or when img
// was read from the same registry with ggcr's remote package, blobs are
// mounted across repositories instead of uploaded.
func Push(ctx context.Context, ref string, img v1.Image, opts ...Option) (v1.Hash, error) {
	display, err := NormalizeReference(ref)
	if err != nil {
		return v1.Hash{}, wrap("push", ref, err)
	}
	h, err := push(ctx, ref, img, opts)
	return h, wrap("push", display, err)
}

func push(ctx context.Context, ref string, img v1.Image, opts []Option) (v1.Hash, error) {
	o, err := makeOptions(opts...)
	if err != nil {
		return v1.Hash{}, err
	}
	if img == nil {
		return v1.Hash{}, classed(errdefs.ErrInvalidArgument, nil, "no image to push")
	}
	_, r, err := o.parseRef(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	var mountRef name.Reference
	if o.mountFrom != "" {
		_, mr, err := o.parseRef(o.mountFrom)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("mount source: %w", err)
		}
		if mr.Context().RegistryStr() == r.Context().RegistryStr() && mr.Context() != r.Context() {
			mountRef = mr
		}
	}
	layers, err := img.Layers()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("read layers: %w", err)
	}
	wrapped := make([]*pushLayer, 0, len(layers))
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return v1.Hash{}, fmt.Errorf("read layer digest: %w", err)
		}
		size, _ := l.Size()
		pl := &pushLayer{inner: l, id: shortID(d), size: size, progress: o.progress}
		o.progress.Start(pl.id, size)
		wrapped = append(wrapped, pl)
	}
	auth, err := authn.Resolve(ctx, o.keychain, r.Context())
	if err != nil {
		return v1.Hash{}, fmt.Errorf("resolve credentials for %s: %w", r.Context().RegistryStr(), err)
	}
	pi := &pushImage{Image: img, layers: make([]v1.Layer, len(wrapped)), mountRef: mountRef}
	for i, pl := range wrapped {
		var l v1.Layer = pl
		if ml, ok := layers[i].(*remote.MountableLayer); ok {
			l = &remote.MountableLayer{Layer: pl, Reference: ml.Reference}
		} else if mountRef != nil {
			l = &remote.MountableLayer{Layer: pl, Reference: mountRef}
		}
		pi.layers[i] = l
	}
	err = remote.Write(r, pi,
		remote.WithContext(ctx),
		remote.WithAuth(auth),
		remote.WithTransport(o.transport()),
		remote.WithUserAgent(o.userAgent),
		remote.WithJobs(o.jobs),
		remote.WithRetryBackoff(remote.Backoff{Steps: o.retries + 1, Duration: 200e6, Factor: 2}),
	)
	for _, pl := range wrapped {
		switch {
		case err != nil:
		case pl.read.Load() > 0:
			o.progress.Done(pl.id, "Pushed")
		default:
			o.progress.Done(pl.id, "Layer already exists")
		}
	}
	if err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// pushImage is img with its layers replaced by progress-reporting wrappers.
type pushImage struct {
	v1.Image
	layers   []v1.Layer
	mountRef name.Reference
}

// ConfigLayer lets remote.Write mount the config blob too (partial.ConfigLayer).
func (i *pushImage) ConfigLayer() (v1.Layer, error) {
	l, err := partial.ConfigLayer(i.Image)
	if err != nil {
		return nil, err
	}
	if _, ok := l.(*remote.MountableLayer); !ok && i.mountRef != nil {
		l = &remote.MountableLayer{Layer: l, Reference: i.mountRef}
	}
	return l, nil
}

// Layers implements v1.Image.
func (i *pushImage) Layers() ([]v1.Layer, error) { return i.layers, nil }

// LayerByDigest implements v1.Image.
func (i *pushImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	for _, l := range i.layers {
		if d, err := l.Digest(); err == nil && d == h {
			return l, nil
		}
	}
	return i.Image.LayerByDigest(h)
}

// pushLayer reports the bytes read from its compressed stream.
type pushLayer struct {
	inner    v1.Layer
	id       string
	size     int64
	progress Progress
	read     atomic.Int64
}

func (l *pushLayer) Digest() (v1.Hash, error)             { return l.inner.Digest() }
func (l *pushLayer) DiffID() (v1.Hash, error)             { return l.inner.DiffID() }
func (l *pushLayer) Size() (int64, error)                 { return l.inner.Size() }
func (l *pushLayer) Uncompressed() (io.ReadCloser, error) { return l.inner.Uncompressed() }
func (l *pushLayer) MediaType() (mt types.MediaType, err error) {
	return l.inner.MediaType()
}

// Compressed implements v1.Layer, counting what the upload reads.
func (l *pushLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.inner.Compressed()
	if err != nil {
		return nil, err
	}
	if l.read.Load() > 0 { // a retried upload starts again
		l.progress.Start(l.id, l.size)
	}
	l.read.Store(0)
	return &countingReader{rc: rc, l: l}, nil
}

type countingReader struct {
	rc io.ReadCloser
	l  *pushLayer
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.rc.Read(b)
	if n > 0 {
		c.l.read.Add(int64(n))
		c.l.progress.Add(c.l.id, int64(n))
	}
	return n, err
}

func (c *countingReader) Close() error { return c.rc.Close() }
