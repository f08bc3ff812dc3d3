package image

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/berthdev/berth/internal/errdefs"
)

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                           "docker.io/library/busybox:latest",
		"busybox:1.36":                      "docker.io/library/busybox:1.36",
		"library/busybox":                   "docker.io/library/busybox:latest",
		"docker.io/foo/bar:1":               "docker.io/foo/bar:1",
		"index.docker.io/library/alpine":    "docker.io/library/alpine:latest",
		"localhost:5000/x":                  "localhost:5000/x:latest",
		"ghcr.io/a/b:v1":                    "ghcr.io/a/b:v1",
		"quay.io/a/b@sha256:" + hex64("ab"): "quay.io/a/b@sha256:" + hex64("ab"),
	} {
		got, err := Normalize(in)
		if err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for full, want := range map[string]string{
		"docker.io/library/busybox:latest": "busybox:latest",
		"docker.io/foo/bar:1":              "foo/bar:1",
		"localhost:5000/x:latest":          "localhost:5000/x:latest",
	} {
		if got := FamiliarName(full); got != want {
			t.Errorf("FamiliarName(%q) = %q, want %q", full, got, want)
		}
	}
	if _, err := Normalize("UPPER/case"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Normalize(UPPER/case): %v, want ErrInvalidArgument", err)
	}
}

func hex64(p string) string { return strings.Repeat(p, 64/len(p)) }

func TestWriteGetTagRemove(t *testing.T) {
	s := openStore(t)
	src := busyboxImage(t)
	img, err := s.Write(bg, src, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	wantID := mustHash(t, src.ConfigName)
	if img.ID != wantID || img.Digest != mustHash(t, src.Digest) {
		t.Fatalf("ID/Digest = %s/%s", img.ID, img.Digest)
	}
	if len(img.RepoTags) != 1 || img.RepoTags[0] != "docker.io/library/busybox:latest" {
		t.Fatalf("RepoTags = %v", img.RepoTags)
	}
	if img.Size <= 0 || len(img.DiffIDs) != 1 || img.Config.Config.Cmd[0] != "/bin/sh" {
		t.Fatalf("bad image %+v", img)
	}

	for _, ref := range []string{
		"busybox", "busybox:latest", "docker.io/library/busybox:latest", "library/busybox",
		wantID.String(), wantID.Hex, wantID.Hex[:12], "sha256:" + wantID.Hex[:12],
		"busybox@" + img.Digest.String(), img.Digest.String(),
	} {
		got, err := s.Get(bg, ref)
		if err != nil || got.ID != wantID {
			t.Errorf("Get(%q) = %v, %v", ref, got, err)
		}
	}
	for _, ref := range []string{"busybox:nope", wantID.Hex[:11], "alpine", "sha256:" + hex64("0")} {
		if _, err := s.Get(bg, ref); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), ref) {
			t.Errorf("Get(%q): %v, want ErrNotFound naming the ref", ref, err)
		}
	}

	if err := s.Tag(bg, "busybox", "localhost:5000/bb:v1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(bg, "nope", "x"); !errdefs.IsNotFound(err) {
		t.Fatalf("Tag missing: %v", err)
	}
	got, _ := s.Get(bg, "localhost:5000/bb:v1")
	if got == nil || len(got.RepoTags) != 2 {
		t.Fatalf("after tag: %+v", got)
	}
	// By ID with two tags: conflict unless forced.
	if _, _, err := s.Remove(bg, wantID.Hex[:12], false); !errdefs.IsConflict(err) {
		t.Fatalf("Remove by ID with 2 tags: %v, want ErrConflict", err)
	}
	// By name: untag only.
	untagged, deleted, err := s.Remove(bg, "localhost:5000/bb:v1", false)
	if err != nil || len(untagged) != 1 || len(deleted) != 0 {
		t.Fatalf("Remove by name = %v %v %v", untagged, deleted, err)
	}
	if err := s.Untag(bg, "localhost:5000/bb:v1"); !errdefs.IsNotFound(err) {
		t.Fatalf("Untag twice: %v", err)
	}
	// Untag leaves a dangling image.
	if err := s.Tag(bg, "busybox", "other"); err != nil {
		t.Fatal(err)
	}
	if err := s.Untag(bg, "other"); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List(bg); len(list) != 1 || len(list[0].RepoTags) != 1 {
		t.Fatalf("List = %+v", list)
	}
	if _, err := s.LayerDirs(bg, img); err != nil {
		t.Fatal(err)
	}
	// Last tag by name: image, blobs and unpacked layers go.
	untagged, deleted, err = s.Remove(bg, "busybox", false)
	if err != nil || len(untagged) != 1 || len(deleted) != 2 || deleted[0] != wantID || deleted[1] != img.DiffIDs[0] {
		t.Fatalf("Remove last tag = %v %v %v", untagged, deleted, err)
	}
	if f := storeFiles(t, s); len(f) != 0 {
		t.Fatalf("left behind: %v", f)
	}
	if list, _ := s.List(bg); len(list) != 0 {
		t.Fatalf("List after rmi = %v", list)
	}
}

func TestRemoveForceAndSharedLayers(t *testing.T) {
	s := openStore(t)
	base := layerOf(t, busyboxEntries(t))
	a := imageOf(t, []string{"a"}, base)
	b := imageOf(t, []string{"b"}, base, layerOf(t, []entry{{name: "b", body: "b"}}))
	ia, err := s.Write(bg, a, "a", "a2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(bg, b, "b"); err != nil {
		t.Fatal(err)
	}
	untagged, deleted, err := s.Remove(bg, ia.ID.String(), true)
	if err != nil || len(untagged) != 2 || len(deleted) != 1 {
		t.Fatalf("force remove = %v %v %v", untagged, deleted, err)
	}
	// The shared layer survives for b.
	ib, err := s.Get(bg, "b")
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := s.LayerDirs(bg, ib)
	if err != nil || len(dirs) != 2 {
		t.Fatalf("LayerDirs = %v %v", dirs, err)
	}
	if _, err := os.Stat(filepath.Join(dirs[0], "bin/busybox")); err != nil {
		t.Fatal(err)
	}
}

func TestShortIDLookup(t *testing.T) {
	s := openStore(t)
	for i := 0; i < 20; i++ {
		img, err := random.Image(64, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(bg, img); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.List(bg)
	if err != nil || len(list) != 20 {
		t.Fatalf("List = %d %v", len(list), err)
	}
	for _, img := range list {
		got, err := s.Get(bg, img.ID.Hex[:12])
		if err != nil || got.ID != img.ID {
			t.Fatalf("Get short ID: %v", err)
		}
	}
}

// lyingLayer claims one digest but serves other bytes.
type lyingLayer struct{ v1.Layer }

func (l lyingLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("not the layer")), nil
}

type lyingImage struct{ v1.Image }

func (i lyingImage) Layers() ([]v1.Layer, error) {
	ls, err := i.Image.Layers()
	if err != nil {
		return nil, err
	}
	ls[len(ls)-1] = lyingLayer{ls[len(ls)-1]}
	return ls, nil
}

func TestDigestMismatchRefused(t *testing.T) {
	s := openStore(t)
	img, err := random.Image(256, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(bg, lyingImage{img}, "bad"); !errors.Is(err, errdefs.ErrCorrupt) {
		t.Fatalf("Write lying image: %v, want ErrCorrupt", err)
	}
	if f := storeFiles(t, s); len(f) != 0 {
		t.Fatalf("left behind: %v", f)
	}
	if _, err := s.Get(bg, "bad"); !errdefs.IsNotFound(err) {
		t.Fatalf("Get after failed write: %v", err)
	}

	// A config whose DiffID does not match the layer content.
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs[1] = v1.Hash{Algorithm: "sha256", Hex: hex64("1")}
	bad, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(bg, bad, "bad"); !errors.Is(err, errdefs.ErrCorrupt) {
		t.Fatalf("Write wrong diff ID: %v, want ErrCorrupt", err)
	}
	if f := storeFiles(t, s); len(f) != 0 {
		t.Fatalf("left behind: %v", f)
	}
}

func TestConcurrentWriteSharedLayer(t *testing.T) {
	requiresRoot(t)
	base := layerOf(t, busyboxEntries(t))
	imgs := []v1.Image{
		imageOf(t, []string{"one"}, base, layerOf(t, []entry{{name: "one", body: "1"}})),
		imageOf(t, []string{"two"}, base, layerOf(t, []entry{{name: "two", body: "2"}})),
	}
	for round := 0; round < 3; round++ {
		s := openStore(t)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range imgs {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				img, err := s.Write(bg, imgs[i], []string{"one", "two"}[i])
				if err == nil {
					_, err = s.LayerDirs(bg, img)
				}
				errs[i] = err
			}(i)
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		list, err := s.List(bg)
		if err != nil || len(list) != 2 {
			t.Fatalf("List = %v %v", list, err)
		}
		ents, _ := os.ReadDir(s.layerDir())
		n := 0
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				n++
			}
		}
		if n != 3 {
			t.Fatalf("want 3 unpacked layers, got %d", n)
		}
	}
}
