package registry_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/berthdev/berth/internal/registry/server"
)

// testRegistry is a berth registry server behind an httptest server whose
// handler records requests and lets a test intercept them.
type testRegistry struct {
	t    *testing.T
	host string // 127.0.0.1:port
	root string

	mu   sync.Mutex
	reqs []string // "METHOD path"
	hook func(w http.ResponseWriter, r *http.Request) bool
}

type regOpts struct {
	htpasswd string
}

func newTestRegistry(t *testing.T, o regOpts) *testRegistry {
	t.Helper()
	root := t.TempDir()
	srv, err := server.New(t.Context(), server.Config{Addr: "127.0.0.1:0", Root: root, Htpasswd: o.htpasswd})
	if err != nil {
		t.Fatalf("start registry: %v", err)
	}
	tr := &testRegistry{t: t, root: root}
	inner := srv.Handler()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		tr.reqs = append(tr.reqs, r.Method+" "+r.URL.Path)
		hook := tr.hook
		tr.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		ts.Close()
		_ = srv.Close()
	})
	tr.host = strings.TrimPrefix(ts.URL, "http://")
	return tr
}

// setHook installs h; it returns true when it answered the request itself.
func (r *testRegistry) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hook = h
}

// reset forgets the requests seen so far.
func (r *testRegistry) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = nil
}

// count returns how many requests matched method and contained substr in their path.
func (r *testRegistry) count(method, substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, q := range r.reqs {
		m, p, _ := strings.Cut(q, " ")
		if (method == "" || m == method) && strings.Contains(p, substr) {
			n++
		}
	}
	return n
}

func (r *testRegistry) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reqs...)
}

func (r *testRegistry) ref(repoTag string) string { return r.host + "/" + repoTag }

// push writes img to the registry with ggcr directly (not the code under test).
func (r *testRegistry) push(ref string, img v1.Image, opts ...remote.Option) {
	r.t.Helper()
	nr, err := name.ParseReference(ref)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.Write(nr, img, opts...); err != nil {
		r.t.Fatalf("seed push %s: %v", ref, err)
	}
}

// layoutStore is a minimal image store over an OCI layout: it verifies
// every blob it writes, keeps tags in memory and implements the optional
// BlobChecker and ImageGetter capabilities.
type layoutStore struct {
	mu     sync.Mutex
	path   layout.Path
	dir    string
	tags   map[string]v1.Hash
	writes int
}

func newLayoutStore(t *testing.T) *layoutStore {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	return &layoutStore{path: p, dir: dir, tags: map[string]v1.Hash{}}
}

func (s *layoutStore) Write(_ context.Context, img v1.Image, tags ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		if s.hasLocked(d) {
			continue
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		h := sha256.New()
		b, err := io.ReadAll(io.TeeReader(rc, h))
		rc.Close()
		if err != nil {
			return err
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.String() {
			return fmt.Errorf("store: layer %s has digest %s", d, got)
		}
		if err := s.path.WriteBlob(d, io.NopCloser(bytes.NewReader(b))); err != nil {
			return err
		}
	}
	// Config and manifest; layers the store had are not read again.
	cn, err := img.ConfigName()
	if err != nil {
		return err
	}
	rc, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := s.path.WriteBlob(cn, io.NopCloser(bytes.NewReader(rc))); err != nil {
		return err
	}
	rm, err := img.RawManifest()
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	if err := s.path.WriteBlob(d, io.NopCloser(bytes.NewReader(rm))); err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	if err := s.path.AppendDescriptor(v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(rm))}); err != nil {
		return err
	}
	for _, t := range tags {
		s.tags[t] = d
	}
	s.writes++
	return nil
}

func (s *layoutStore) hasLocked(d v1.Hash) bool {
	_, err := os.Stat(filepath.Join(s.dir, "blobs", d.Algorithm, d.Hex))
	return err == nil
}

func (s *layoutStore) Has(_ context.Context, d v1.Hash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hasLocked(d)
}

func (s *layoutStore) V1Image(_ context.Context, ref string) (v1.Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.tags[ref]
	if !ok {
		if _, dg, found := strings.Cut(ref, "@"); found {
			h, err := v1.NewHash(dg)
			if err == nil && s.hasLocked(h) {
				return s.path.Image(h)
			}
		}
		return nil, fmt.Errorf("no image %s", ref)
	}
	return s.path.Image(d)
}

// blobCount is the number of blobs in the store.
func (s *layoutStore) blobCount(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(s.dir, "blobs", "sha256"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// busyboxImage builds a small image from the host's busybox binary, or
// skips the test when there is none.
func busyboxImage(t *testing.T) v1.Image {
	t.Helper()
	bin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("no /bin/busybox to build an image from: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mod := time.Unix(0, 0)
	add := func(h *tar.Header, body []byte) {
		h.ModTime = mod
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))}, bin)
	for _, l := range []string{"sh", "ls", "echo", "cat"} {
		add(&tar.Header{Name: "bin/" + l, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = []string{"sh"}
	cf.Config.Env = []string{"PATH=/bin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func strconvFormat(n int64) string { return fmt.Sprint(n) }

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// quietGGCR is ggcr's in-process registry without request logging.
func quietGGCR() http.Handler {
	return ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
}
