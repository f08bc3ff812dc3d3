package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/berthdev/berth/internal/errdefs"
)

// tarDir tars a directory tree (regular files and dirs).
func tarDir(t *testing.T, dir string) []byte {
	t.Helper()
	var es []entry
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if fi.IsDir() {
			es = append(es, entry{name: rel + "/", typ: tar.TypeDir})
			return nil
		}
		b, err := os.ReadFile(p)
		es = append(es, entry{name: rel, body: string(b)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tarBytes(t, es)
}

func TestLoadDockerArchive(t *testing.T) {
	requiresRoot(t)
	s := openStore(t)
	bb := busyboxImage(t)
	rnd, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	refs := map[name.Reference]v1.Image{
		name.MustParseReference("busybox:1.36"):          bb,
		name.MustParseReference("localhost:5000/rnd:v1"): rnd,
		name.MustParseReference("example.com/x/rnd:v2"):  rnd,
	}
	if err := tarball.MultiRefWrite(refs, &buf); err != nil {
		t.Fatal(err)
	}
	loaded, err := s.Load(bg, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 3 {
		t.Fatalf("loaded %v", loaded)
	}
	img, err := s.Get(bg, "busybox:1.36")
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != mustHash(t, bb.ConfigName) {
		t.Fatalf("image ID changed by load: %s", img.ID)
	}
	r, err := s.Get(bg, "localhost:5000/rnd:v1")
	if err != nil || len(r.RepoTags) != 2 || r.ID != mustHash(t, rnd.ConfigName) {
		t.Fatalf("rnd = %+v %v", r, err)
	}
	dirs, err := s.LayerDirs(bg, img)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(dirs[0], "bin/sh")); err != nil || l != "/bin/busybox" {
		t.Fatalf("bin/sh -> %q %v", l, err)
	}
}

func TestLoadOCIArchive(t *testing.T) {
	s := openStore(t)
	bb := busyboxImage(t)
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(bb, layout.WithAnnotations(map[string]string{annotationRefName: "docker.io/library/bb:oci"})); err != nil {
		t.Fatal(err)
	}
	rnd, _ := random.Image(100, 1)
	if err := p.AppendImage(rnd); err != nil { // untagged
		t.Fatal(err)
	}
	loaded, err := s.Load(bg, bytes.NewReader(tarDir(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 2 || loaded[0] != "docker.io/library/bb:oci" || loaded[1] != mustHash(t, rnd.ConfigName).String() {
		t.Fatalf("loaded %v", loaded)
	}
	img, err := s.Get(bg, "bb:oci")
	if err != nil || img.Digest != mustHash(t, bb.Digest) {
		t.Fatalf("Get = %+v %v", img, err)
	}
}

func TestSaveRoundTrip(t *testing.T) {
	s := openStore(t)
	src, err := s.Write(bg, busyboxImage(t), "busybox", "localhost:5000/bb:1")
	if err != nil {
		t.Fatal(err)
	}
	rnd, _ := random.Image(100, 2)
	untagged, err := s.Write(bg, rnd)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"", FormatDockerArchive, FormatOCIArchive} {
		var buf bytes.Buffer
		if err := s.Save(bg, &buf, format, "busybox", "localhost:5000/bb:1", untagged.ID.Hex[:12]); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		s2 := openStore(t)
		loaded, err := s2.Load(bg, &buf)
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if len(loaded) != 3 {
			t.Fatalf("%s: loaded %v", format, loaded)
		}
		got, err := s2.Get(bg, "busybox")
		if err != nil || got.ID != src.ID || len(got.RepoTags) != 2 {
			t.Fatalf("%s: Get = %+v %v", format, got, err)
		}
		if format == FormatOCIArchive && got.Digest != src.Digest {
			t.Fatalf("oci-archive changed the manifest digest")
		}
		if _, err := s2.Get(bg, untagged.ID.String()); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
	}
	if err := s.Save(bg, &bytes.Buffer{}, "zip", "busybox"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("bad format: %v", err)
	}
	if err := s.Save(bg, &bytes.Buffer{}, "", "nope"); !errdefs.IsNotFound(err) {
		t.Fatalf("missing image: %v", err)
	}
}

func TestImport(t *testing.T) {
	requiresRoot(t)
	s := openStore(t)
	img, err := s.Import(bg, bytes.NewReader(tarBytes(t, busyboxEntries(t))), "imported:v1")
	if err != nil {
		t.Fatal(err)
	}
	if img.Config.OS != "linux" || img.Config.Architecture == "" || img.Config.Config.Cmd != nil || len(img.DiffIDs) != 1 {
		t.Fatalf("config = %+v", img.Config)
	}
	if img.RepoTags[0] != "docker.io/library/imported:v1" {
		t.Fatalf("tags %v", img.RepoTags)
	}
	dirs, err := s.LayerDirs(bg, img)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dirs[0], "bin/busybox"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("busybox: %v %v", fi, err)
	}
	if _, err := s.Import(bg, strings.NewReader("this is not a tar, not at all, no, it is plainly not a tar file of any sort at all, really"), "x"); err == nil {
		t.Fatal("Import of garbage succeeded")
	}
	if list, _ := s.List(bg); len(list) != 1 {
		t.Fatalf("List = %v", list)
	}
}

// TestLoadUnsafeArchives checks outer archives that must be refused with the
// store left unchanged.
func TestLoadUnsafeArchives(t *testing.T) {
	rnd, _ := random.Image(100, 1)
	var good bytes.Buffer
	if err := tarball.Write(name.MustParseReference("ok:1"), rnd, &good); err != nil {
		t.Fatal(err)
	}
	cfgName := mustHash(t, rnd.ConfigName).String()
	for _, tc := range []struct {
		name    string
		entries []entry
		want    error
		msg     string
	}{
		{"dotdot member", []entry{{name: "../evil", body: "x"}}, errdefs.ErrCorrupt, `"../evil"`},
		{"nested dotdot", []entry{{name: "a/../../evil", body: "x"}}, errdefs.ErrCorrupt, ".."},
		{"absolute member", []entry{{name: "/etc/evil", body: "x"}}, errdefs.ErrCorrupt, "absolute"},
		{"absolute symlink", []entry{{name: "l", link: "/etc/passwd", typ: tar.TypeSymlink}}, errdefs.ErrCorrupt, "symlink"},
		{"escaping symlink", []entry{{name: "a/l", link: "../../etc/passwd", typ: tar.TypeSymlink}}, errdefs.ErrCorrupt, "outside"},
		{"device", []entry{{name: "d", typ: tar.TypeChar, major: 1, minor: 3}}, errdefs.ErrCorrupt, "unsupported"},
		{"malformed manifest", []entry{{name: "manifest.json", body: "[{"}}, errdefs.ErrCorrupt, "malformed manifest.json"},
		{"malformed index", []entry{{name: "index.json", body: "{]"}}, errdefs.ErrCorrupt, "malformed index.json"},
		{"manifest names outside", []entry{{name: "manifest.json", body: `[{"Config":"../../etc/passwd","Layers":[]}]`}}, errdefs.ErrCorrupt, "outside the archive"},
		{"manifest names missing", []entry{{name: "manifest.json", body: `[{"Config":"nope.json","Layers":[]}]`}}, errdefs.ErrCorrupt, "not found"},
		{"neither", []entry{{name: "hello", body: "x"}}, errdefs.ErrInvalidArgument, "neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			if _, err := s.Load(bg, bytes.NewReader(good.Bytes())); err != nil {
				t.Fatal(err)
			}
			before := storeFiles(t, s)
			_, err := s.Load(bg, bytes.NewReader(tarBytes(t, tc.entries)))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Load: %v, want %v mentioning %q on one line", err, tc.want, tc.msg)
			}
			if after := storeFiles(t, s); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Fatalf("store changed: %v -> %v", before, after)
			}
			if list, _ := s.List(bg); len(list) != 1 || list[0].ID.String() != cfgName {
				t.Fatalf("List = %v", list)
			}
		})
	}
	// A valid archive followed by a corrupt second image: all or nothing.
	t.Run("second image corrupt", func(t *testing.T) {
		s := openStore(t)
		es := []entry{{name: "cfg.json", body: `{"rootfs":{"type":"layers","diff_ids":["sha256:` + hex64("2") + `"]}}`},
			{name: "layer.tar", body: string(tarBytes(t, []entry{{name: "f", body: "f"}}))}}
		rb, _ := rnd.RawConfigFile()
		l, _ := rnd.Layers()
		lr, _ := l[0].Uncompressed()
		lb := new(bytes.Buffer)
		_, _ = lb.ReadFrom(lr)
		es = append(es, entry{name: "good.json", body: string(rb)}, entry{name: "good.tar", body: lb.String()},
			entry{name: "manifest.json", body: `[{"Config":"good.json","RepoTags":["good:1"],"Layers":["good.tar"]},{"Config":"cfg.json","RepoTags":["bad:1"],"Layers":["layer.tar"]}]`})
		_, err := s.Load(bg, bytes.NewReader(tarBytes(t, es)))
		if !errors.Is(err, errdefs.ErrCorrupt) {
			t.Fatalf("Load: %v", err)
		}
		if f := storeFiles(t, s); len(f) != 0 {
			t.Fatalf("left behind %v", f)
		}
		if _, err := s.Get(bg, "good:1"); !errdefs.IsNotFound(err) {
			t.Fatalf("first image registered: %v", err)
		}
	})
}
