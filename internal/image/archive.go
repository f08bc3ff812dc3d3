package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
)

// Archive formats accepted by Save.
const (
	FormatDockerArchive = "docker-archive"
	FormatOCIArchive    = "oci-archive"
)

const (
	annotationRefName        = "org.opencontainers.image.ref.name"
	annotationContainerdName = "io.containerd.image.name"
)

// Load reads a tar holding a Docker archive (docker save: manifest.json) or
// an OCI image layout (index.json), detected from its content, and stores
// every image in it. It returns the loaded tags (full names) or, for an
// untagged image, its ID. All images are loaded or none: on any failure
// — unsafe member, malformed manifest, digest mismatch — the store is
// unchanged.
func (s *Store) Load(ctx context.Context, r io.Reader) ([]string, error) {
	unlock, err := s.lock(ctx, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	imgs, items, err := s.loadLocked(ctx, r)
	unlock()
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("load: %w", err)
	}
	var out []string
	for i, img := range imgs {
		if len(items[i].tags) == 0 {
			out = append(out, img.ID.String())
		}
		out = append(out, items[i].tags...)
	}
	return out, nil
}

// loadLocked is Load under the shared store lock, which keeps the scratch
// dir safe from garbage collection until the images are registered.
func (s *Store) loadLocked(ctx context.Context, r io.Reader) ([]*Image, []pending, error) {
	tmp, err := os.MkdirTemp(s.tmpDir(), "load-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(tmp)
	items, err := s.readArchive(ctx, r, tmp)
	if err != nil {
		return nil, nil, err
	}
	if len(items) == 0 {
		return nil, nil, fmt.Errorf("archive holds no image: %w", errdefs.ErrInvalidArgument)
	}
	imgs, err := s.ingestLocked(ctx, items)
	return imgs, items, err
}

// readArchive unpacks the outer archive into dir and returns its images.
func (s *Store) readArchive(ctx context.Context, r io.Reader, dir string) ([]pending, error) {
	if err := extractArchive(ctx, r, dir); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(filepath.Join(dir, "manifest.json")); err == nil {
		return readDockerArchive(dir)
	}
	if _, err := os.Lstat(filepath.Join(dir, "index.json")); err == nil {
		return readOCILayout(dir)
	}
	return nil, fmt.Errorf("archive has neither manifest.json nor index.json: %w", errdefs.ErrInvalidArgument)
}

// extractArchive writes the regular files of an outer archive under dir.
// Members with absolute or ".." paths, links pointing outside, and special
// files are refused. In-archive links (old docker save links duplicate
// layer.tar files) become hardlinks of the file they resolve to; no symlink
// is ever created.
func extractArchive(ctx context.Context, r io.Reader, dir string) error {
	tr := tar.NewReader(ctxReader{ctx, r})
	links := map[string]string{}
	seen := false
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !seen {
				return fmt.Errorf("not a tar archive: %w: %w", errdefs.ErrInvalidArgument, err)
			}
			return fmt.Errorf("read archive: %w: %w", errdefs.ErrCorrupt, err)
		}
		seen = true
		rel, err := archiveRel(hdr.Name)
		if err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if rel != "." {
				if err := os.MkdirAll(filepath.Join(dir, rel), 0o700); err != nil {
					return fmt.Errorf("archive member %q: %w", hdr.Name, err)
				}
			}
		case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives
			if rel == "." {
				return fmt.Errorf("archive member %q: bad name: %w", hdr.Name, errdefs.ErrCorrupt)
			}
			if err := writeArchiveFile(filepath.Join(dir, rel), tr); err != nil {
				return fmt.Errorf("archive member %q: %w", hdr.Name, err)
			}
			delete(links, rel)
		case tar.TypeSymlink, tar.TypeLink:
			target := hdr.Linkname
			if hdr.Typeflag == tar.TypeSymlink {
				if path.IsAbs(target) {
					return fmt.Errorf("archive member %q: symlink to absolute path %q: %w", hdr.Name, target, errdefs.ErrCorrupt)
				}
				target = path.Join(path.Dir(rel), target)
			}
			t, err := archiveRel(target)
			if err != nil || t == "." {
				return fmt.Errorf("archive member %q: link target %q is outside the archive: %w", hdr.Name, hdr.Linkname, errdefs.ErrCorrupt)
			}
			links[rel] = t
		case tar.TypeXGlobalHeader:
		default:
			return fmt.Errorf("archive member %q: unsupported type %q: %w", hdr.Name, hdr.Typeflag, errdefs.ErrCorrupt)
		}
	}
	if !seen {
		return fmt.Errorf("empty archive: %w", errdefs.ErrInvalidArgument)
	}
	names := make([]string, 0, len(links))
	for l := range links {
		names = append(names, l)
	}
	sort.Strings(names)
	for _, l := range names {
		t := l
		for range 40 {
			next, ok := links[t]
			if !ok {
				break
			}
			t = next
		}
		if _, ok := links[t]; ok {
			return fmt.Errorf("archive member %q: link loop: %w", l, errdefs.ErrCorrupt)
		}
		src := filepath.Join(dir, t)
		if fi, err := os.Lstat(src); err != nil || !fi.Mode().IsRegular() {
			continue // dangling: an error only if a manifest names it
		}
		dst := filepath.Join(dir, l)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return fmt.Errorf("archive member %q: %w", l, err)
		}
		os.Remove(dst)
		if err := os.Link(src, dst); err != nil {
			return fmt.Errorf("archive member %q: %w", l, err)
		}
	}
	return nil
}

// archiveRel validates the name of an outer-archive member.
func archiveRel(name string) (string, error) {
	if path.IsAbs(name) {
		return "", fmt.Errorf("archive member %q: absolute path: %w", name, errdefs.ErrCorrupt)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("archive member %q: path with \"..\": %w", name, errdefs.ErrCorrupt)
		}
	}
	return path.Clean(name), nil
}

func writeArchiveFile(p string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	// Only this function creates files under the scratch dir and it never
	// makes symlinks, so O_NOFOLLOW on the last component is belt and braces.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// dockerManifestEntry is one element of a Docker archive's manifest.json.
type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func readDockerArchive(dir string) ([]pending, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("read manifest.json: %w", err)
	}
	var entries []dockerManifestEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("malformed manifest.json: %s: %w", oneLine(err), errdefs.ErrCorrupt)
	}
	var out []pending
	for i, e := range entries {
		cfgPath, err := archiveFile(dir, e.Config)
		if err != nil {
			return nil, fmt.Errorf("manifest.json entry %d config: %w", i, err)
		}
		rawCfg, err := os.ReadFile(cfgPath)
		if err != nil {
			return nil, fmt.Errorf("manifest.json entry %d config: %w", i, err)
		}
		cfg, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
		if err != nil {
			return nil, fmt.Errorf("malformed image config %s: %s: %w", e.Config, oneLine(err), errdefs.ErrCorrupt)
		}
		if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
			return nil, fmt.Errorf("manifest.json entry %d: %d layers but config has %d diff IDs: %w",
				i, len(e.Layers), len(cfg.RootFS.DiffIDs), errdefs.ErrCorrupt)
		}
		img := &dockerArchiveImage{rawCfg: rawCfg, cfg: cfg}
		for _, l := range e.Layers {
			p, err := archiveFile(dir, l)
			if err != nil {
				return nil, fmt.Errorf("manifest.json entry %d layer: %w", i, err)
			}
			img.layers = append(img.layers, p)
		}
		vi, err := partial.UncompressedToImage(img)
		if err != nil {
			return nil, err
		}
		p := pending{img: vi}
		for _, t := range e.RepoTags {
			full, err := normalizeTag(t)
			if err != nil {
				return nil, fmt.Errorf("manifest.json entry %d: bad tag %q: %w", i, t, errdefs.ErrCorrupt)
			}
			p.tags = append(p.tags, full)
		}
		out = append(out, p)
	}
	return out, nil
}

// archiveFile resolves a file named by a manifest inside the scratch dir,
// refusing names outside it.
func archiveFile(dir, name string) (string, error) {
	rel, err := archiveRel(name)
	if err != nil || rel == "." || name == "" {
		return "", fmt.Errorf("file %q is outside the archive: %w", name, errdefs.ErrCorrupt)
	}
	p := filepath.Join(dir, rel)
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("file %q not found in archive: %w", name, errdefs.ErrCorrupt)
	}
	return p, nil
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

// dockerArchiveImage is an image of a Docker archive as a
// partial.UncompressedImageCore: config bytes kept as they are (so the image
// ID is preserved), layers read from the unpacked archive files.
type dockerArchiveImage struct {
	rawCfg []byte
	cfg    *v1.ConfigFile
	layers []string
}

func (i *dockerArchiveImage) RawConfigFile() ([]byte, error) { return i.rawCfg, nil }
func (i *dockerArchiveImage) MediaType() (types.MediaType, error) {
	return types.DockerManifestSchema2, nil
}

func (i *dockerArchiveImage) LayerByDiffID(h v1.Hash) (partial.UncompressedLayer, error) {
	for n, d := range i.cfg.RootFS.DiffIDs {
		if d == h {
			// Layer files may be plain or gzip tars; LayerFromFile detects which.
			return tarball.LayerFromFile(i.layers[n])
		}
	}
	return nil, fmt.Errorf("layer %s: %w", h, errdefs.ErrNotFound)
}

func readOCILayout(dir string) ([]pending, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return nil, fmt.Errorf("read index.json: %w", err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("malformed index.json: %s: %w", oneLine(err), errdefs.ErrCorrupt)
	}
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("read OCI layout: %s: %w", oneLine(err), errdefs.ErrCorrupt)
	}
	var out []pending
	for _, desc := range idx.Manifests {
		img, err := ociImage(ii, desc)
		if err != nil {
			return nil, err
		}
		p := pending{img: img}
		if t := ociRefName(desc.Annotations); t != "" {
			p.tags = append(p.tags, t)
		}
		out = append(out, p)
	}
	return out, nil
}

// ociImage opens the image a descriptor of index.json names; for a nested
// index (multi-platform) it picks the linux/GOARCH manifest.
func ociImage(ii v1.ImageIndex, desc v1.Descriptor) (v1.Image, error) {
	switch desc.MediaType {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		img, err := ii.Image(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s in OCI layout: %s: %w", desc.Digest, oneLine(err), errdefs.ErrCorrupt)
		}
		if d, err := img.Digest(); err != nil || d != desc.Digest {
			return nil, fmt.Errorf("image %s in OCI layout: manifest content does not match its digest: %w", desc.Digest, errdefs.ErrCorrupt)
		}
		return img, nil
	case types.OCIImageIndex, types.DockerManifestList:
		child, err := ii.ImageIndex(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("index %s in OCI layout: %s: %w", desc.Digest, oneLine(err), errdefs.ErrCorrupt)
		}
		m, err := child.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("index %s in OCI layout: %s: %w", desc.Digest, oneLine(err), errdefs.ErrCorrupt)
		}
		want := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
		for _, d := range m.Manifests {
			if d.Platform != nil && d.Platform.Satisfies(want) {
				return ociImage(child, d)
			}
		}
		return nil, fmt.Errorf("index %s in OCI layout has no linux/%s image: %w", desc.Digest, runtime.GOARCH, errdefs.ErrNotFound)
	}
	return nil, fmt.Errorf("OCI layout entry %s: unsupported media type %q: %w", desc.Digest, desc.MediaType, errdefs.ErrInvalidArgument)
}

// ociRefName returns the full name an index.json descriptor carries, if any:
// containerd's io.containerd.image.name, else org.opencontainers.image.ref.name
// when it is a full reference rather than a bare tag.
func ociRefName(a map[string]string) string {
	for _, k := range []string{annotationContainerdName, annotationRefName} {
		v := a[k]
		if v == "" || (k == annotationRefName && !strings.ContainsAny(v, "/:")) {
			continue
		}
		if full, err := normalizeTag(v); err == nil {
			return full
		}
	}
	return ""
}

// Save writes the images refs name as a tar to w: format "docker-archive"
// (the default, as docker save) or "oci-archive" (an OCI image layout).
// A ref naming a tag saves that tag; an ID saves the image untagged.
func (s *Store) Save(ctx context.Context, w io.Writer, format string, refs ...string) error {
	if len(refs) == 0 {
		return fmt.Errorf("save: no image named: %w", errdefs.ErrInvalidArgument)
	}
	type entry struct {
		img v1.Image
		id  v1.Hash
		tag string // full name, or "" for untagged
	}
	var entries []entry
	for _, ref := range refs {
		img, err := s.Get(ctx, ref)
		if err != nil {
			return fmt.Errorf("save: %w", err)
		}
		vi, err := s.v1Image(img.Digest)
		if err != nil {
			return fmt.Errorf("save %s: %w", ref, err)
		}
		e := entry{img: vi, id: img.ID}
		if _, isID := idPrefix(ref); !isID || !strings.HasPrefix(img.ID.Hex, strings.TrimPrefix(ref, "sha256:")) {
			if full, err := normalizeTag(ref); err == nil && slicesContains(img.RepoTags, full) {
				e.tag = full
			}
		}
		entries = append(entries, e)
	}
	switch format {
	case "", FormatDockerArchive:
		m := map[name.Reference]v1.Image{}
		for _, e := range entries {
			var r name.Reference
			var err error
			if e.tag != "" {
				r, err = name.NewTag(FamiliarName(e.tag))
			} else {
				r, err = name.NewDigest("untagged@" + e.id.String())
			}
			if err != nil {
				return fmt.Errorf("save %s: %w", e.id, err)
			}
			m[r] = e.img
		}
		if err := tarball.MultiRefWrite(m, w); err != nil {
			return fmt.Errorf("save: %w", err)
		}
		return nil
	case FormatOCIArchive:
		var descs []v1.Descriptor
		var imgs []v1.Image
		for _, e := range entries {
			d, err := partial.Descriptor(e.img)
			if err != nil {
				return fmt.Errorf("save %s: %w", e.id, err)
			}
			desc := *d
			if e.tag != "" {
				desc.Annotations = map[string]string{
					annotationContainerdName: e.tag,
					annotationRefName:        e.tag[strings.LastIndex(e.tag, ":")+1:],
				}
			}
			descs = append(descs, desc)
			imgs = append(imgs, e.img)
		}
		if err := s.writeOCIArchive(ctx, w, descs, imgs); err != nil {
			return fmt.Errorf("save: %w", err)
		}
		return nil
	}
	return fmt.Errorf("save: unknown format %q (want %s or %s): %w", format, FormatDockerArchive, FormatOCIArchive, errdefs.ErrInvalidArgument)
}

func slicesContains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// writeOCIArchive streams an OCI image layout as a tar straight from the blob
// store: oci-layout, blobs/sha256/*, index.json.
func (s *Store) writeOCIArchive(ctx context.Context, w io.Writer, descs []v1.Descriptor, imgs []v1.Image) error {
	tw := tar.NewWriter(w)
	now := time.Unix(0, 0)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, ModTime: now, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
	}
	written := map[v1.Hash]bool{}
	for _, img := range imgs {
		m, err := img.Manifest()
		if err != nil {
			return err
		}
		d, err := img.Digest()
		if err != nil {
			return err
		}
		blobs := []v1.Hash{d, m.Config.Digest}
		for _, l := range m.Layers {
			blobs = append(blobs, l.Digest)
		}
		for _, h := range blobs {
			if written[h] {
				continue
			}
			written[h] = true
			if err := s.copyBlob(ctx, tw, h); err != nil {
				return err
			}
		}
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: descs}
	raw, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := put("index.json", raw); err != nil {
		return err
	}
	return tw.Close()
}

func (s *Store) copyBlob(ctx context.Context, tw *tar.Writer, h v1.Hash) error {
	f, err := os.Open(s.blobPath(h))
	if err != nil {
		return fmt.Errorf("read blob %s: %w", h, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: "blobs/sha256/" + h.Hex, Mode: 0o444, Size: fi.Size(), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.Copy(tw, ctxReader{ctx, f})
	return err
}

// Import turns a rootfs tarball (plain, gzip or zstd) into a one-layer image
// with a default config (linux, the host architecture, no Cmd), tagged ref
// when ref is not empty.
func (s *Store) Import(ctx context.Context, r io.Reader, ref string) (*Image, error) {
	var tags []string
	if ref != "" {
		full, err := normalizeTag(ref)
		if err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
		tags = []string{full}
	}
	unlock, err := s.lock(ctx, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	img, err := s.importLocked(ctx, r, tags)
	unlock()
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("import: %w", err)
	}
	return img, nil
}

func (s *Store) importLocked(ctx context.Context, r io.Reader, tags []string) (*Image, error) {
	f, err := os.CreateTemp(s.tmpDir(), "import-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, ctxReader{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("spool tarball: %w", err)
	}
	layer, err := tarball.LayerFromFile(f.Name())
	if err != nil {
		return nil, err
	}
	if err := checkTar(layer); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	cfg := &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: now},
		RootFS:       v1.RootFS{Type: "layers"},
	}
	base, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: now}, CreatedBy: "berth import", Comment: "Imported from tarball"},
	})
	if err != nil {
		return nil, err
	}
	if img, err = mutate.CreatedAt(img, v1.Time{Time: now}); err != nil {
		return nil, err
	}
	imgs, err := s.ingestLocked(ctx, []pending{{img: img, tags: tags}})
	if err != nil {
		return nil, err
	}
	return imgs[0], nil
}

// checkTar reads a layer's uncompressed stream as a tar to the end.
func checkTar(l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	n := 0
	for {
		_, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("not a tar archive: %w: %w", errdefs.ErrInvalidArgument, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("empty or not a tar archive: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}
