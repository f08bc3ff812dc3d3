package registry

import (
	"bytes"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berthdev/berth/internal/errdefs"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// stagedImage is a pulled image whose manifest and config are in memory and
// whose new layers are verified files in the staging directory. It is the
// partial.CompressedImageCore behind the v1.Image handed to Store.Write.
type stagedImage struct {
	manifest  []byte
	config    []byte
	mediaType types.MediaType
	configDig v1.Hash
	layers    map[v1.Hash]partial.CompressedLayer
}

// RawManifest implements partial.CompressedImageCore.
func (i *stagedImage) RawManifest() ([]byte, error) { return i.manifest, nil }

// RawConfigFile implements partial.ImageCore.
func (i *stagedImage) RawConfigFile() ([]byte, error) { return i.config, nil }

// MediaType implements partial.ImageCore.
func (i *stagedImage) MediaType() (types.MediaType, error) { return i.mediaType, nil }

// LayerByDigest implements partial.CompressedImageCore.
func (i *stagedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.configDig {
		return partial.ConfigLayer(i)
	}
	if l := i.layers[h]; l != nil {
		return l, nil
	}
	return nil, fmt.Errorf("%w: %s: %w", errNoLayer, h, errdefs.ErrNotFound)
}

// stagedLayer is a verified blob in the staging directory.
type stagedLayer struct {
	path   string
	desc   v1.Descriptor
	diffID v1.Hash
}

// Digest implements partial.CompressedLayer.
func (l *stagedLayer) Digest() (v1.Hash, error) { return l.desc.Digest, nil }

// DiffID implements partial.WithDiffID, from the image config.
func (l *stagedLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// Compressed implements partial.CompressedLayer.
func (l *stagedLayer) Compressed() (io.ReadCloser, error) { return os.Open(l.path) }

// Size implements partial.CompressedLayer.
func (l *stagedLayer) Size() (int64, error) { return l.desc.Size, nil }

// MediaType implements partial.CompressedLayer.
func (l *stagedLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }

// Descriptor implements partial.Describable, keeping annotations and URLs.
func (l *stagedLayer) Descriptor() (*v1.Descriptor, error) { d := l.desc; return &d, nil }
