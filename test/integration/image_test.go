package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// busyboxImage is the busybox rootfs as a v1.Image with a Cmd, env and
// working directory, the way an image from a registry would carry them.
func busyboxImage(t *testing.T) v1.Image {
	t.Helper()
	data := busyboxRootfs(t)
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config.Cmd = []string{"sh", "-c", "echo from-image-cmd $GREETING $(pwd)"}
	cf.Config.Env = []string{"PATH=/bin", "GREETING=hi"}
	cf.Config.WorkingDir = "/tmp"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestLoadSaveRoundTrip(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	archive := filepath.Join(dir, "docker.tar")
	tag, _ := name.NewTag("example.com/team/app:v1")
	if err := tarball.WriteToFile(archive, tag, busyboxImage(t)); err != nil {
		t.Fatal(err)
	}
	if out := e.must("load", "-i", archive); !strings.Contains(out, "example.com/team/app:v1") {
		t.Fatalf("load said %q", out)
	}
	// The image's Cmd, Env and WorkingDir are honoured.
	if out := e.must("run", "--rm", "example.com/team/app:v1"); strings.TrimSpace(out) != "from-image-cmd hi /tmp" {
		t.Fatalf("run with image defaults = %q", out)
	}
	e.must("tag", "example.com/team/app:v1", "app2")
	rows := e.must("images", "--format", "{{.Repository}}:{{.Tag}}")
	if !strings.Contains(rows, "example.com/team/app:v1") || !strings.Contains(rows, "app2:latest") {
		t.Fatalf("images = %q", rows)
	}
	var js map[string]any
	line := strings.SplitN(e.must("images", "--format", "json"), "\n", 2)[0]
	if err := json.Unmarshal([]byte(line), &js); err != nil || js["ID"] == nil {
		t.Fatalf("images --format json line %q: %v", line, err)
	}
	ids := strings.Fields(e.must("images", "-q"))
	if len(ids) != 1 {
		t.Fatalf("images -q = %v, want one ID for two tags", ids)
	}
	if out := e.must("image", "inspect", "--format", "{{.Config.Config.WorkingDir}}", "app2"); strings.TrimSpace(out) != "/tmp" {
		t.Fatalf("image inspect = %q", out)
	}

	for _, format := range []string{"docker-archive", "oci-archive"} {
		out := filepath.Join(dir, format+".tar")
		e.must("save", "--format", format, "-o", out, "app2")
		e2 := newEnv(t)
		e2.must("load", "-i", out)
		if got := e2.must("run", "--rm", "app2", "echo", "ok"); got != "ok\n" {
			t.Fatalf("%s round trip: run = %q", format, got)
		}
	}

	// rmi: refused while a container uses the image, then by name untags.
	e.must("create", "--name", "user", "app2", "true")
	if _, err := e.berth("rmi", ids[0]); err == nil {
		t.Fatal("rmi of an image in use succeeded")
	}
	e.must("rm", "user")
	e.must("rmi", "app2")
	e.must("rmi", "example.com/team/app:v1")
	if out := e.must("images", "-q"); out != "" {
		t.Fatalf("after rmi: %q", out)
	}
}

// writeTar writes a tar of the given entries.
func writeTar(t *testing.T, path string, entries []*tar.Header, bodies map[string][]byte) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		b := bodies[h.Name]
		h.Size = int64(len(b))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	tw.Close()
	os.WriteFile(path, buf.Bytes(), 0o644)
}

func TestMaliciousArchivesRefused(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	evil := filepath.Join(dir, "evil-layer.tar")
	writeTar(t, evil, []*tar.Header{{Name: "../../escaped", Typeflag: tar.TypeReg}}, map[string][]byte{"../../escaped": []byte("x")})
	sym := filepath.Join(dir, "symlink-layer.tar")
	writeTar(t, sym, []*tar.Header{
		{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/"},
		{Name: "link/tmp/escaped-through-symlink", Typeflag: tar.TypeReg},
	}, map[string][]byte{"link/tmp/escaped-through-symlink": []byte("x")})
	dev := filepath.Join(dir, "device-layer.tar")
	writeTar(t, dev, []*tar.Header{{Name: "mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1}}, nil)
	for _, layer := range []string{evil, sym, dev} {
		if _, err := e.berth("import", layer, "evil:latest"); err != nil {
			if n := strings.Count(stderrOf(err), "\n"); n != 1 {
				t.Errorf("import %s: error not one line: %q", filepath.Base(layer), stderrOf(err))
			}
		} else {
			// Import stores the layer as given; running it must fail before anything escapes.
			if _, err := e.berth("run", "--rm", "evil", "true"); err == nil {
				t.Errorf("%s: a malicious layer was unpacked and run", filepath.Base(layer))
			}
			e.berth("rmi", "-f", "evil")
		}
	}
	if _, err := os.Stat("/tmp/escaped-through-symlink"); err == nil {
		os.Remove("/tmp/escaped-through-symlink")
		t.Fatal("a layer wrote through a symlink onto the host")
	}

	// A Docker archive whose manifest names a file outside the archive.
	bad := filepath.Join(dir, "traversal.tar")
	manifest := []byte(`[{"Config":"../../etc/passwd","RepoTags":["x:1"],"Layers":["../../etc/shadow"]}]`)
	writeTar(t, bad, []*tar.Header{{Name: "manifest.json", Typeflag: tar.TypeReg}}, map[string][]byte{"manifest.json": manifest})
	if _, err := e.berth("load", "-i", bad); err == nil {
		t.Fatal("an archive with ../ paths in its manifest was loaded")
	}
	notjson := filepath.Join(dir, "notjson.tar")
	writeTar(t, notjson, []*tar.Header{{Name: "manifest.json", Typeflag: tar.TypeReg}}, map[string][]byte{"manifest.json": []byte("{not json")})
	if _, err := e.berth("load", "-i", notjson); err == nil || strings.Count(stderrOf(err), "\n") != 1 {
		t.Fatalf("malformed manifest: %v", err)
	}

	// A layer whose content does not match the digest the image claims.
	good := filepath.Join(dir, "good.tar")
	tag, _ := name.NewTag("mismatch:1")
	if err := tarball.WriteToFile(good, tag, busyboxImage(t)); err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(dir, "tampered.tar")
	tamperLayer(t, good, tampered)
	if _, err := e.berth("load", "-i", tampered); err == nil {
		t.Fatal("a tampered layer was loaded")
	}
	if out := e.must("images", "-q"); out != "" {
		t.Fatalf("failed loads left images: %q", out)
	}
	blobs, _ := os.ReadDir(filepath.Join(e.root, "image", "blobs", "sha256"))
	if len(blobs) != 0 {
		t.Fatalf("failed loads left %d blobs in the store", len(blobs))
	}
}

// tamperLayer copies a Docker archive, flipping one byte inside its layer.
func tamperLayer(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var out bytes.Buffer
	tr, tw := tar.NewReader(in), tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if strings.HasSuffix(h.Name, ".tar.gz") || (strings.HasSuffix(h.Name, ".tar") && len(body) > 1<<20) {
			body[len(body)/2] ^= 0xff
		}
		tw.WriteHeader(h)
		tw.Write(body)
	}
	tw.Close()
	os.WriteFile(dst, out.Bytes(), 0o644)
}
