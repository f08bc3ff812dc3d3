package registry_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/registry"
)

func randomImage(t *testing.T, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(64<<10, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPushPullRoundTrip(t *testing.T) {
	reg := newTestRegistry(t, regOpts{})
	for _, tc := range []struct {
		name string
		img  func(t *testing.T) v1.Image
	}{
		{"random", func(t *testing.T) v1.Image { return randomImage(t, 3) }},
		{"busybox", busyboxImage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			img := tc.img(t)
			ref := reg.ref("test/" + tc.name + ":v1")
			pushed, err := registry.Push(ctx, ref, img)
			if err != nil {
				t.Fatalf("push: %v", err)
			}
			if want := digestOf(t, img); pushed != want {
				t.Fatalf("push returned %s, want %s", pushed, want)
			}
			st := newLayoutStore(t)
			res, err := registry.Pull(ctx, ref, st)
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			if len(res) != 1 || res[0].Digest != pushed || res[0].UpToDate || res[0].Ref != ref {
				t.Fatalf("pull result %+v, want digest %s for %s", res, pushed, ref)
			}
			got, err := st.V1Image(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			if d := digestOf(t, got); d != pushed {
				t.Fatalf("stored image %s, want %s", d, pushed)
			}
			ls, _ := img.Layers()
			if n := st.blobCount(t); n != len(ls)+2 { // layers, config, manifest
				t.Fatalf("store has %d blobs, want %d", n, len(ls)+2)
			}
		})
	}
}

func TestPullUpToDateIsFastAndFetchesNothing(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t, regOpts{})
	ref := reg.ref("test/fast:latest")
	reg.push(ref, randomImage(t, 3))
	st := newLayoutStore(t)
	if _, err := registry.Pull(ctx, ref, st); err != nil {
		t.Fatal(err)
	}
	reg.reset()
	start := time.Now()
	res, err := registry.Pull(ctx, ref, st)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].UpToDate {
		t.Fatalf("second pull not up to date: %+v", res[0])
	}
	if n := reg.count("GET", "/blobs/"); n != 0 {
		t.Fatalf("second pull fetched %d blobs: %v", n, reg.requests())
	}
	if n := reg.count("GET", "/manifests/"); n != 0 {
		t.Fatalf("second pull fetched the manifest %d times: %v", n, reg.requests())
	}
	if st.writes != 1 {
		t.Fatalf("store written %d times, want 1", st.writes)
	}
	if elapsed > 100*time.Millisecond {
		t.Errorf("second pull took %v, want < 100ms (requests %v)", elapsed, reg.requests())
	}
	t.Logf("second pull: %v, requests %v", elapsed, reg.requests())
}

func TestPullSkipsLayersTheStoreHas(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t, regOpts{})
	base := randomImage(t, 2)
	extra := randomImage(t, 1)
	els, _ := extra.Layers()
	derived, err := mutate.AppendLayers(base, els...)
	if err != nil {
		t.Fatal(err)
	}
	reg.push(reg.ref("test/base:1"), base)
	reg.push(reg.ref("test/derived:1"), derived)
	st := newLayoutStore(t)
	if _, err := registry.Pull(ctx, reg.ref("test/base:1"), st); err != nil {
		t.Fatal(err)
	}
	reg.reset()
	if _, err := registry.Pull(ctx, reg.ref("test/derived:1"), st); err != nil {
		t.Fatal(err)
	}
	// Only the new layer is downloaded (config comes as a blob too).
	ed := digestOf2(t, els[0])
	if n := reg.count("GET", "/blobs/"); n != 2 || reg.count("GET", ed.String()) != 1 {
		t.Fatalf("want 2 blob GETs (new layer + config), got %v", reg.requests())
	}
}

func digestOf2(t *testing.T, l v1.Layer) v1.Hash {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPullByDigestAndNormalisation(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t, regOpts{})
	img := randomImage(t, 1)
	reg.push(reg.ref("test/dig:1"), img)
	d := digestOf(t, img)
	st := newLayoutStore(t)
	res, err := registry.Pull(ctx, reg.ref("test/dig@"+d.String()), st)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Digest != d {
		t.Fatalf("pulled %s, want %s", res[0].Digest, d)
	}
	if len(st.tags) != 0 {
		t.Fatalf("pull by digest tagged %v", st.tags)
	}
	reg.reset()
	res, err = registry.Pull(ctx, reg.ref("test/dig@"+d.String()), st)
	if err != nil || !res[0].UpToDate || len(reg.requests()) != 0 {
		t.Fatalf("second pull by digest: %+v, %v, requests %v", res, err, reg.requests())
	}
	for in, want := range map[string]string{
		"busybox":                        "docker.io/library/busybox:latest",
		"library/busybox:1.36":           "docker.io/library/busybox:1.36",
		"ghcr.io/o/r":                    "ghcr.io/o/r:latest",
		"localhost:5000/x@" + d.String(): "localhost:5000/x@" + d.String(),
	} {
		got, err := registry.NormalizeReference(in)
		if err != nil || got != want {
			t.Errorf("NormalizeReference(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := registry.NormalizeReference("Bad Ref"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad reference: %v, want ErrInvalidArgument", err)
	}
}

func TestPullAllTags(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t, regOpts{})
	reg.push(reg.ref("test/all:a"), randomImage(t, 1))
	reg.push(reg.ref("test/all:b"), randomImage(t, 1))
	st := newLayoutStore(t)
	res, err := registry.Pull(ctx, reg.ref("test/all"), st, registry.WithAllTags(true))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Ref != reg.ref("test/all:a") || res[1].Ref != reg.ref("test/all:b") {
		t.Fatalf("all tags: %+v", res)
	}
	if _, err := registry.Pull(ctx, reg.ref("test/all:a"), st, registry.WithAllTags(true)); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("all tags with a tag: %v, want ErrInvalidArgument", err)
	}
}

func TestPullMultiPlatform(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t, regOpts{})
	plat := map[string]v1.Image{}
	idx := v1.ImageIndex(empty.Index)
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, p := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}} {
		img := randomImage(t, 1)
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
		img, err := mutate.ConfigFile(img, cf)
		if err != nil {
			t.Fatal(err)
		}
		plat[p.Architecture] = img
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	ref := reg.ref("test/multi:1")
	nr := mustRef(t, ref)
	if err := remote.WriteIndex(nr, idx); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	for _, tc := range []struct {
		opt  []registry.Option
		want string
	}{
		{nil, "amd64"},
		{[]registry.Option{registry.WithPlatform("linux/amd64")}, "amd64"},
		{[]registry.Option{registry.WithPlatform("linux/arm64")}, "arm64"},
	} {
		st := newLayoutStore(t)
		res, err := registry.Pull(ctx, ref, st, tc.opt...)
		if err != nil {
			t.Fatal(err)
		}
		if want := digestOf(t, plat[tc.want]); res[0].Digest != want || res[0].Platform.Architecture != tc.want {
			t.Errorf("%s: pulled %s (%s), want %s", tc.want, res[0].Digest, res[0].Platform.String(), want)
		}
		if res[0].RepoDigest != reg.host+"/test/multi@"+idxDigest.String() {
			t.Errorf("repo digest %s, want the index digest %s", res[0].RepoDigest, idxDigest)
		}
		// A second pull is up to date although the tag names the index.
		res, err = registry.Pull(ctx, ref, st, tc.opt...)
		if err != nil || !res[0].UpToDate {
			t.Errorf("%s: second pull %+v, %v", tc.want, res, err)
		}
	}
	_, err := registry.Pull(ctx, ref, newLayoutStore(t), registry.WithPlatform("linux/s390x"))
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "linux/s390x") {
		t.Fatalf("missing platform: %v", err)
	}
	// An explicit platform that a single-platform image does not have fails.
	reg.push(reg.ref("test/single:1"), plat["arm64"])
	_, err = registry.Pull(ctx, reg.ref("test/single:1"), newLayoutStore(t), registry.WithPlatform("linux/amd64"))
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("platform mismatch: %v", err)
	}
}

func TestPullErrors(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t, regOpts{})
	img := randomImage(t, 2)
	ref := reg.ref("test/err:1")
	reg.push(ref, img)
	ls, _ := img.Layers()
	victim := digestOf2(t, ls[1])

	corrupt := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+victim.String()) {
			return false
		}
		b, _ := ls[1].Compressed()
		defer b.Close()
		data := make([]byte, 0)
		buf := bufio.NewReader(b)
		for {
			c, err := buf.ReadByte()
			if err != nil {
				break
			}
			data = append(data, c)
		}
		data[len(data)/2] ^= 0xff
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(data)
		return true
	}
	for _, tc := range []struct {
		name  string
		hook  func(w http.ResponseWriter, r *http.Request) bool
		class error
		msg   string
	}{
		{"bad manifest JSON", func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.Contains(r.URL.Path, "/manifests/") {
				return false
			}
			w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
			if r.Method == http.MethodGet {
				_, _ = w.Write([]byte(`{"schemaVersion": 2, "layers": [`))
			}
			return true
		}, errdefs.ErrCorrupt, "JSON"},
		{"missing layer", func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasSuffix(r.URL.Path, "/blobs/"+victim.String()) {
				return false
			}
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}`, http.StatusNotFound)
			return true
		}, errdefs.ErrNotFound, "missing"},
		{"digest mismatch", corrupt, errdefs.ErrCorrupt, "does not match its digest"},
		{"connection closed mid-layer", func(w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+victim.String()) {
				return false
			}
			hijackHalf(t, w, ls[1])
			return true
		}, errdefs.ErrUnavailable, "connection closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newLayoutStore(t)
			staging := t.TempDir()
			reg.setHook(tc.hook)
			_, err := registry.Pull(ctx, ref, st, registry.WithStagingDir(staging), registry.WithRetries(1))
			reg.setHook(nil)
			if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want class %v mentioning %q", err, tc.class, tc.msg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			t.Logf("error: %v", err)
			if n := st.blobCount(t); n != 0 || st.writes != 0 {
				t.Fatalf("store has %d blobs after a failed pull", n)
			}
			// Nothing unverified under a final name in staging.
			es, _ := os.ReadDir(staging)
			for _, e := range es {
				if !strings.HasSuffix(e.Name(), ".partial") {
					fi, _ := e.Info()
					if strings.Contains(e.Name(), victim.Hex) {
						t.Errorf("unverified blob staged as %s (%d bytes)", e.Name(), fi.Size())
					}
				}
			}
			// A clean retry succeeds.
			res, err := registry.Pull(ctx, ref, st, registry.WithStagingDir(staging))
			if err != nil || res[0].Digest != digestOf(t, img) {
				t.Fatalf("retry: %+v, %v", res, err)
			}
			es, _ = os.ReadDir(staging)
			if len(es) != 0 {
				t.Errorf("staging not emptied after success: %v", es)
			}
		})
	}
}

// hijackHalf writes response headers and half the layer, then drops the connection.
func hijackHalf(t *testing.T, w http.ResponseWriter, l v1.Layer) {
	size, _ := l.Size()
	rc, err := l.Compressed()
	if err != nil {
		t.Error(err)
		return
	}
	defer rc.Close()
	conn, bw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
		itoa(size) + "\r\n\r\n")
	buf := make([]byte, size/2)
	_, _ = rc.Read(buf)
	_, _ = bw.Write(buf)
	_ = bw.Flush()
}

func itoa(n int64) string { return strconvFormat(n) }

func TestPullResumesInterruptedLayer(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t, regOpts{})
	img := randomImage(t, 1)
	ref := reg.ref("test/resume:1")
	reg.push(ref, img)
	ls, _ := img.Layers()
	victim := digestOf2(t, ls[0])
	var cut atomic.Bool
	var ranges atomic.Int32
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+victim.String()) {
			return false
		}
		if r.Header.Get("Range") != "" {
			ranges.Add(1)
		}
		if cut.CompareAndSwap(false, true) {
			hijackHalf(t, w, ls[0])
			return true
		}
		return false
	})
	st := newLayoutStore(t)
	res, err := registry.Pull(ctx, ref, st)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Digest != digestOf(t, img) || ranges.Load() != 1 {
		t.Fatalf("resume: %+v, %d range requests", res, ranges.Load())
	}
}

func TestPullCancelledThenResumed(t *testing.T) {
	reg := newTestRegistry(t, regOpts{})
	img := randomImage(t, 1)
	ref := reg.ref("test/cancel:1")
	reg.push(ref, img)
	ls, _ := img.Layers()
	victim := digestOf2(t, ls[0])
	ctx, cancel := context.WithCancel(t.Context())
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+victim.String()) {
			return false
		}
		size, _ := ls[0].Size()
		rc, _ := ls[0].Compressed()
		defer rc.Close()
		w.Header().Set("Content-Length", itoa(size))
		buf := make([]byte, size/3)
		_, _ = rc.Read(buf)
		_, _ = w.Write(buf)
		http.NewResponseController(w).Flush()
		cancel()
		<-r.Context().Done()
		return true
	})
	st := newLayoutStore(t)
	staging := t.TempDir()
	_, err := registry.Pull(ctx, ref, st, registry.WithStagingDir(staging))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull: %v", err)
	}
	if st.blobCount(t) != 0 {
		t.Fatal("cancelled pull wrote to the store")
	}
	part, err := filepath.Glob(filepath.Join(staging, "*.partial"))
	if err != nil || len(part) != 1 {
		t.Fatalf("want one partial download, got %v", part)
	}
	reg.setHook(nil)
	reg.reset()
	if _, err := registry.Pull(t.Context(), ref, st, registry.WithStagingDir(staging)); err != nil {
		t.Fatal(err)
	}
	if st.writes != 1 {
		t.Fatalf("store writes %d", st.writes)
	}
}
