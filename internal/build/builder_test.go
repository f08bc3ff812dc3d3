package build_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/berthdev/berth/internal/build"
	"github.com/berthdev/berth/internal/image"
	"github.com/berthdev/berth/internal/snapshot/overlay"
)

var bg = context.Background()

// images is the real image store as build.Images.
type images struct{ s *image.Store }

func (i images) Image(ctx context.Context, ref string) (v1.Image, error) {
	return i.s.V1Image(ctx, ref)
}
func (i images) LayerDirs(ctx context.Context, id v1.Hash) ([]string, error) {
	img, err := i.s.Get(ctx, id.String())
	if err != nil {
		return nil, err
	}
	return i.s.LayerDirs(ctx, img)
}
func (i images) Write(ctx context.Context, img v1.Image, tags ...string) (v1.Hash, error) {
	stored, err := i.s.Write(ctx, img, tags...)
	if err != nil {
		return v1.Hash{}, err
	}
	return stored.ID, nil
}

type snaps struct{ *overlay.Snapshotter }

func (s snaps) Diff(ctx context.Context, key string, w io.Writer) error {
	return overlay.Diff(ctx, s.Upper(key), w)
}

// fakeExec interprets `/bin/sh -c SCRIPT` where SCRIPT is lines of
// "write PATH TEXT", "rm PATH" or "exit N", acting on the rootfs directly.
type fakeExec struct{ runs []build.RunRequest }

func (f *fakeExec) Run(_ context.Context, req build.RunRequest) (int, error) {
	f.runs = append(f.runs, req)
	if len(req.Args) != 3 || req.Args[0] != "/bin/sh" {
		return 127, nil
	}
	for _, line := range strings.Split(req.Args[2], "\n") {
		w := strings.Fields(line)
		switch {
		case len(w) >= 3 && w[0] == "write":
			if err := os.WriteFile(filepath.Join(req.Rootfs, w[1]), []byte(strings.Join(w[2:], " ")), 0o644); err != nil {
				return 0, err
			}
		case len(w) == 2 && w[0] == "rm":
			if err := os.Remove(filepath.Join(req.Rootfs, w[1])); err != nil {
				return 1, nil
			}
		case len(w) == 2 && w[0] == "exit":
			n, _ := strconv.Atoi(w[1])
			fmt.Fprintf(req.Stdout, "exiting %d\n", n)
			return n, nil
		}
	}
	return 0, nil
}

func baseImage(t *testing.T) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		name string
		typ  byte
		body string
	}{
		{"etc/", tar.TypeDir, ""}, {"etc/passwd", tar.TypeReg, "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"},
		{"etc/group", tar.TypeReg, "root:x:0:\nstaff:x:50:\n"}, {"old.txt", tar.TypeReg, "old"}, {"tmp/", tar.TypeDir, ""},
	} {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o755, Size: int64(len(e.body))}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/bin"}
	cf.Config.OnBuild = []string{"ENV TRIGGERED=yes"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

type fixture struct {
	store *image.Store
	exec  *fakeExec
	b     *build.Builder
	ctx   string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root (overlay mounts)")
	}
	dir := t.TempDir()
	st, err := image.Open(filepath.Join(dir, "image"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(bg, baseImage(t), "base:1"); err != nil {
		t.Fatal(err)
	}
	sn, err := overlay.New(filepath.Join(dir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: st, exec: &fakeExec{}, ctx: filepath.Join(dir, "ctx")}
	if f.b, err = build.New(filepath.Join(dir, "build"), filepath.Join(dir, "tmp"), images{st}, snaps{sn}, f.exec); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(f.ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ents, _ := os.ReadDir(filepath.Join(dir, "snapshots")); len(ents) > 0 {
			t.Errorf("snapshots left behind: %v", ents)
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) > 0 {
			t.Errorf("run dirs left behind: %v", ents)
		}
	})
	return f
}

func (f *fixture) file(t *testing.T, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.ctx, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) build(t *testing.T, opts build.Options) (v1.Hash, string, error) {
	t.Helper()
	var out bytes.Buffer
	opts.ContextDir, opts.Out = f.ctx, &out
	id, err := f.b.Build(bg, opts)
	return id, out.String(), err
}

// layerFiles lists the entries of an image's last layer.
func layerFiles(t *testing.T, img v1.Image, i int) []string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(ls)
	}
	rc, err := ls[i].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var names []string
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, fmt.Sprintf("%s %d:%d", hdr.Name, hdr.Uid, hdr.Gid))
	}
}

func TestBuildValidImageAndCache(t *testing.T) {
	f := newFixture(t)
	f.file(t, "Dockerfile", `FROM base:1
ENV X=1
WORKDIR /w
COPY --chown=app:staff f.txt ./
RUN write /w/run.txt hello
RUN rm /old.txt
CMD ["x"]
`)
	f.file(t, "f.txt", "content")
	id, out, err := f.build(t, build.Options{Tags: []string{"built:1"}})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	img, err := f.store.V1Image(bg, "built:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("built image is not valid: %v", err)
	}
	if got, _ := img.ConfigName(); got != id {
		t.Errorf("Build returned %s, tag points at %s", id, got)
	}
	cf, _ := img.ConfigFile()
	// base, the ONBUILD trigger, then one entry per instruction.
	if len(cf.RootFS.DiffIDs) != 5 || len(cf.History) != 8 {
		t.Errorf("%d layers, %d history entries; want 5 and 8", len(cf.RootFS.DiffIDs), len(cf.History))
	}
	if strings.Join(cf.Config.Env, " ") != "PATH=/bin TRIGGERED=yes X=1" || len(cf.Config.OnBuild) != 0 || cf.Config.WorkingDir != "/w" {
		t.Errorf("config %+v", cf.Config)
	}
	if got := strings.Join(layerFiles(t, img, 2), ","); got != "w/ 0:0,w/f.txt 1000:50" {
		t.Errorf("COPY layer: %s", got)
	}
	if got := strings.Join(layerFiles(t, img, -1), ","); got != ".wh.old.txt 0:0" {
		t.Errorf("rm layer: %s", got)
	}
	if r := f.exec.runs[0]; r.Cwd != "/w" || !strings.Contains(strings.Join(r.Env, " "), "X=1") {
		t.Errorf("RUN got cwd %q env %q", r.Cwd, r.Env)
	}

	// Fully cached: same ID, nothing run.
	f.exec.runs = nil
	id2, out, err := f.build(t, build.Options{Tags: []string{"built:1"}})
	if err != nil || id2 != id || len(f.exec.runs) != 0 || strings.Count(out, "CACHED") != 7 {
		t.Errorf("rebuild: %v, id %s (was %s), %d runs:\n%s", err, id2, id, len(f.exec.runs), out)
	}
	// --no-cache runs everything again.
	_, out, err = f.build(t, build.Options{NoCache: true})
	if err != nil || len(f.exec.runs) != 2 || strings.Contains(out, "CACHED") {
		t.Errorf("--no-cache: %v, %d runs:\n%s", err, len(f.exec.runs), out)
	}
}

func TestBuildFailingStep(t *testing.T) {
	f := newFixture(t)
	f.file(t, "Dockerfile", "FROM base:1\nRUN write /a 1\nRUN exit 5\n")
	_, out, err := f.build(t, build.Options{Tags: []string{"never:1"}})
	var se *build.StepError
	if !errors.As(err, &se) || se.ExitCode != 5 || se.Step != 4 || se.Total != 4 || se.Line != 3 {
		t.Fatalf("error %#v", err)
	}
	if !strings.Contains(out, "exiting 5") {
		t.Errorf("RUN output not streamed:\n%s", out)
	}
	if _, err := f.store.Get(bg, "never:1"); err == nil {
		t.Error("failed build was tagged")
	}
	// The step that succeeded is cached for the next attempt.
	f.exec.runs = nil
	f.file(t, "Dockerfile", "FROM base:1\nRUN write /a 1\nRUN write /b 2\n")
	if _, out, err := f.build(t, build.Options{}); err != nil || len(f.exec.runs) != 1 || !strings.Contains(out, "CACHED") {
		t.Errorf("retry: %v, %d runs:\n%s", err, len(f.exec.runs), out)
	}
}

func TestBuildMissingBase(t *testing.T) {
	f := newFixture(t)
	f.file(t, "Dockerfile", "FROM nosuch:1\nRUN write /a 1\n")
	if _, _, err := f.build(t, build.Options{}); err == nil || !strings.Contains(err.Error(), "not in berth's image store") {
		t.Errorf("missing base: %v", err)
	}
	if _, _, err := f.build(t, build.Options{Pull: true}); err == nil || !strings.Contains(err.Error(), "pulling images is not available") {
		t.Errorf("--pull: %v", err)
	}
	if len(f.exec.runs) != 0 {
		t.Error("a step ran")
	}
}
