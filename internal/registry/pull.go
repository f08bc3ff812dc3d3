package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"

	"github.com/berthdev/berth/internal/errdefs"
)

// Store is where Pull writes images. Write must verify every blob it stores
// and point each tag at the image. The image store's Write has this shape
// apart from its result; adapt it with StoreFunc or a small wrapper type that
// embeds the store so its Has and V1Image methods are found too.
type Store interface {
	Write(ctx context.Context, img v1.Image, tags ...string) error
}

// StoreFunc adapts a function to Store.
type StoreFunc func(ctx context.Context, img v1.Image, tags ...string) error

// Write implements Store.
func (f StoreFunc) Write(ctx context.Context, img v1.Image, tags ...string) error {
	return f(ctx, img, tags...)
}

// BlobChecker is an optional Store capability: Pull does not download a layer
// whose blob (compressed) digest Has reports present. Write then receives a
// layer that would download when read, so it must skip blobs it has.
type BlobChecker interface {
	Has(ctx context.Context, digest v1.Hash) bool
}

// ImageGetter is an optional Store capability used for the up-to-date check:
// when V1Image(ctx, ref) returns an image whose manifest digest is the one the
// registry serves for ref, Pull stops after one manifest request.
type ImageGetter interface {
	V1Image(ctx context.Context, ref string) (v1.Image, error)
}

// Pulled describes one image Pull resolved.
type Pulled struct {
	// Ref is the normalised reference, e.g. "docker.io/library/busybox:latest".
	Ref string
	// Digest is the manifest digest of the image stored: the per-platform
	// manifest when Ref names a multi-platform index.
	Digest v1.Hash
	// RepoDigest is "name@digest" of what Ref points at in the registry (the
	// index for a multi-platform image), as `docker images --digests` shows.
	RepoDigest string
	// Platform is the image's platform, from its config.
	Platform v1.Platform
	// UpToDate is true when the store already held the image and nothing was
	// downloaded or written.
	UpToDate bool
}

// Pull fetches the image ref names ("busybox", "ghcr.io/o/r:tag",
// "name@sha256:…") and writes it to dst, tagged with its normalised reference
// unless ref is a digest. A multi-platform index resolves to the host platform
// or the one WithPlatform names; WithAllTags pulls every tag of the
// repository. Layers download in parallel into a staging directory, each
// verified against its digest before dst sees it; layers dst already has are
// not fetched, and an image dst already holds costs one manifest request.
func Pull(ctx context.Context, ref string, dst Store, opts ...Option) ([]Pulled, error) {
	display, err := NormalizeReference(ref)
	if err != nil {
		return nil, wrap("pull", ref, err)
	}
	res, err := pull(ctx, ref, dst, opts)
	return res, wrap("pull", display, err)
}

func pull(ctx context.Context, ref string, dst Store, opts []Option) ([]Pulled, error) {
	o, err := makeOptions(opts...)
	if err != nil {
		return nil, err
	}
	if dst == nil {
		return nil, classed(errdefs.ErrInvalidArgument, nil, "no store to pull into")
	}
	display, r, err := o.parseRef(ref)
	if err != nil {
		return nil, err
	}
	// A digest the store already holds needs no network at all.
	if d, ok := r.(name.Digest); ok && !o.allTags {
		probe := &puller{o: o, dst: dst}
		if local, have := probe.localDigest(ctx, display); have && local.String() == d.DigestStr() {
			return []Pulled{{Ref: display, Digest: local, RepoDigest: display, UpToDate: true}}, nil
		}
	}
	p, err := o.newPuller(ctx, r.Context(), dst)
	if err != nil {
		return nil, err
	}
	defer p.close()
	if !o.allTags {
		res, err := p.pullOne(ctx, display, r)
		if err != nil {
			return nil, err
		}
		return []Pulled{*res}, nil
	}
	if named, err := reference.ParseNormalizedNamed(ref); err != nil || !reference.IsNameOnly(named) {
		return nil, classed(errdefs.ErrInvalidArgument, nil, "all tags: give a repository without tag or digest")
	}
	tags, err := remote.List(r.Context(), p.remoteOpts(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	sort.Strings(tags)
	var out []Pulled
	for _, t := range tags {
		tr := r.Context().Tag(t)
		res, err := p.pullOne(ctx, displayName(r.Context())+":"+t, tr)
		if err != nil {
			return out, fmt.Errorf("tag %s: %w", t, err)
		}
		out = append(out, *res)
	}
	return out, nil
}

// displayName is the Docker-normalised repository name.
func displayName(repo name.Repository) string {
	s, err := NormalizeReference(repo.Name())
	if err != nil {
		return repo.Name()
	}
	n := mustNamed(s)
	return n.Name()
}

// puller holds what one Pull call shares between images: the authenticated
// transport of the repository, the store and the staging directory.
type puller struct {
	o       *options
	repo    name.Repository
	rt      http.RoundTripper
	dst     Store
	fetcher *blobFetcher
	tmpDir  string // removed by close when the staging dir is temporary
}

func (o *options) newPuller(ctx context.Context, repo name.Repository, dst Store) (*puller, error) {
	auth, err := authn.Resolve(ctx, o.keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("resolve credentials for %s: %w", repo.RegistryStr(), err)
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth,
		transport.NewUserAgent(o.transport(), o.userAgent), []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, err
	}
	p := &puller{o: o, repo: repo, rt: rt, dst: dst}
	dir := o.stagingDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "berth-pull-"); err != nil {
			return nil, fmt.Errorf("create staging directory: %w", err)
		}
		p.tmpDir = dir
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create staging directory: %w", err)
	}
	p.fetcher = &blobFetcher{client: &http.Client{Transport: rt}, repo: repo, dir: dir, retries: o.retries, progress: o.progress}
	return p, nil
}

func (p *puller) close() {
	if p.tmpDir != "" {
		_ = os.RemoveAll(p.tmpDir)
	}
}

func (p *puller) remoteOpts(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithTransport(p.rt), remote.WithContext(ctx), remote.WithPlatform(*p.o.platform)}
}

// localDigest is the manifest digest of the image dst holds for ref, if any.
func (p *puller) localDigest(ctx context.Context, ref string) (v1.Hash, bool) {
	g, ok := p.dst.(ImageGetter)
	if !ok {
		return v1.Hash{}, false
	}
	img, err := g.V1Image(ctx, ref)
	if err != nil || img == nil {
		return v1.Hash{}, false
	}
	d, err := img.Digest()
	return d, err == nil
}

// pullOne resolves r to one image for the platform and stores it as display.
func (p *puller) pullOne(ctx context.Context, display string, r name.Reference) (*Pulled, error) {
	res := &Pulled{Ref: display}
	local, haveLocal := p.localDigest(ctx, display)
	if d, ok := r.(name.Digest); ok && haveLocal && local.String() == d.DigestStr() {
		res.Digest, res.RepoDigest, res.UpToDate = local, displayName(r.Context())+"@"+d.DigestStr(), true
		return res, nil
	}
	// HEAD first: when it names the image the store holds, we are done.
	var desc *v1.Descriptor
	if hd, err := remote.Head(r, p.remoteOpts(ctx)...); err == nil {
		desc = hd
	} else if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if desc != nil {
		res.RepoDigest = displayName(r.Context()) + "@" + desc.Digest.String()
		if haveLocal && local == desc.Digest {
			res.Digest, res.UpToDate = local, true
			return res, nil
		}
	}
	got, err := remote.Get(r, p.remoteOpts(ctx)...)
	if err != nil {
		return nil, err
	}
	res.RepoDigest = displayName(r.Context()) + "@" + got.Digest.String()
	var img v1.Image
	switch {
	case got.MediaType.IsIndex():
		child, err := p.pickPlatform(got)
		if err != nil {
			return nil, err
		}
		if haveLocal && local == child.Digest {
			res.Digest, res.UpToDate = local, true
			if child.Platform != nil {
				res.Platform = *child.Platform
			}
			return res, nil
		}
		img, err = remote.Image(r.Context().Digest(child.Digest.String()), p.remoteOpts(ctx)...)
		if err != nil {
			return nil, err
		}
	case got.MediaType.IsSchema1():
		return nil, classed(errdefs.ErrInvalidArgument, nil, "schema 1 manifests are not supported")
	case got.MediaType.IsImage() || got.MediaType == "":
		if img, err = got.Image(); err != nil {
			return nil, err
		}
	default:
		return nil, classed(errdefs.ErrInvalidArgument, nil, "unsupported manifest media type "+string(got.MediaType))
	}
	if res.Digest, err = img.Digest(); err != nil {
		return nil, err
	}
	var tags []string
	if _, isTag := r.(name.Tag); isTag {
		tags = []string{display}
	}
	plat, err := p.fetchImage(ctx, img, tags)
	if err != nil {
		return nil, err
	}
	res.Platform = plat
	return res, nil
}

// pickPlatform returns the index entry for the requested platform.
func (p *puller) pickPlatform(d *remote.Descriptor) (v1.Descriptor, error) {
	idx, err := d.ImageIndex()
	if err != nil {
		return v1.Descriptor{}, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Descriptor{}, classed(errdefs.ErrCorrupt, err, "parse index")
	}
	var seen []string
	for _, m := range im.Manifests {
		if m.Platform == nil {
			continue
		}
		if !m.MediaType.IsImage() && m.MediaType != "" {
			continue
		}
		seen = append(seen, m.Platform.String())
		if m.Platform.Satisfies(*p.o.platform) {
			return m, nil
		}
	}
	return v1.Descriptor{}, classed(errdefs.ErrNotFound, nil, fmt.Sprintf(
		"no image for platform %s in the index (has %v)", p.o.platform, seen))
}

// fetchImage downloads img's missing layers, then writes it to the store.
func (p *puller) fetchImage(ctx context.Context, img v1.Image, tags []string) (v1.Platform, error) {
	var plat v1.Platform
	rawManifest, err := img.RawManifest()
	if err != nil {
		return plat, err
	}
	m, err := img.Manifest()
	if err != nil {
		return plat, classed(errdefs.ErrCorrupt, err, "invalid manifest JSON")
	}
	if m.Config.Digest.Hex == "" {
		return plat, classed(errdefs.ErrCorrupt, nil, "manifest has no config")
	}
	mt, err := img.MediaType()
	if err != nil {
		return plat, err
	}
	rawConfig, err := img.RawConfigFile() // verified against its digest by ggcr
	if err != nil {
		return plat, fmt.Errorf("fetch config %s: %w", m.Config.Digest, err)
	}
	cfg, err := v1.ParseConfigFile(bytesReader(rawConfig))
	if err != nil {
		return plat, classed(errdefs.ErrCorrupt, err, "parse config "+m.Config.Digest.String())
	}
	if cfg.Platform() != nil {
		plat = *cfg.Platform()
	}
	if p.o.platformSet && !plat.Satisfies(*p.o.platform) && plat.OS != "" {
		return plat, classed(errdefs.ErrNotFound, nil, fmt.Sprintf(
			"image is for platform %s, not the requested %s", plat.String(), p.o.platform))
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return plat, classed(errdefs.ErrCorrupt, nil, fmt.Sprintf(
			"manifest lists %d layers but config has %d diff IDs", len(m.Layers), len(cfg.RootFS.DiffIDs)))
	}

	si := &stagedImage{
		manifest:  rawManifest,
		config:    rawConfig,
		mediaType: mt,
		configDig: m.Config.Digest,
		layers:    make(map[v1.Hash]partial.CompressedLayer, len(m.Layers)),
	}
	checker, _ := p.dst.(BlobChecker)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.o.jobs)
	type staged struct {
		h    v1.Hash
		path string
	}
	results := make([]staged, len(m.Layers))
	for i, ld := range m.Layers {
		if _, dup := si.layers[ld.Digest]; dup {
			continue
		}
		if checker != nil && checker.Has(ctx, ld.Digest) {
			p.o.progress.Done(shortID(ld.Digest), "Already exists")
			l, err := img.LayerByDigest(ld.Digest)
			if err != nil {
				return plat, err
			}
			si.layers[ld.Digest] = l
			continue
		}
		si.layers[ld.Digest] = nil // claimed; filled below
		p.o.progress.Start(shortID(ld.Digest), ld.Size)
		g.Go(func() error {
			path, err := p.fetcher.fetch(gctx, ld)
			if err != nil {
				return err
			}
			results[i] = staged{ld.Digest, path}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return plat, err
	}
	var paths []string
	for i, ld := range m.Layers {
		if results[i].path == "" {
			continue
		}
		paths = append(paths, results[i].path)
		si.layers[ld.Digest] = &stagedLayer{path: results[i].path, desc: ld, diffID: cfg.RootFS.DiffIDs[i]}
	}
	full, err := partial.CompressedToImage(si)
	if err != nil {
		return plat, err
	}
	if err := p.dst.Write(ctx, full, tags...); err != nil {
		return plat, fmt.Errorf("store image: %w", err)
	}
	for _, path := range paths {
		_ = os.Remove(path)
	}
	return plat, nil
}

// errNoLayer is returned for a digest the staged image does not contain.
var errNoLayer = errors.New("layer not in image")
