package overlay_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/image"
	"github.com/berthdev/berth/internal/snapshot"
	"github.com/berthdev/berth/internal/snapshot/overlay"
)

var bg = context.Background()

func requiresRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
}

func write(t *testing.T, p, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// view describes a tree: path, type, mode, owner, content or link target.
func view(t *testing.T, root string) string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st := fi.Sys().(*syscall.Stat_t)
		line := rel + " " + fi.Mode().String() + " " + string(rune('0'+st.Uid%10))
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			line += " -> " + l
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += " = " + string(b)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func TestPrepareValidation(t *testing.T) {
	sn, err := overlay.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"", "..", "a/b", "x:y"} {
		if _, err := sn.Prepare(bg, key, nil); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Prepare(%q): %v", key, err)
		}
	}
	if _, err := sn.Prepare(bg, "k", []string{"relative"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("relative lower: %v", err)
	}
	m, err := sn.Prepare(bg, "k", []string{"/l1", "/l2"})
	if err != nil {
		t.Fatal(err)
	}
	if m[0].Type != "overlay" || m[0].Options[0] != "lowerdir=/l2:/l1" {
		t.Fatalf("mount = %+v", m)
	}
	if _, err := sn.Prepare(bg, "k", nil); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second Prepare: %v", err)
	}
	if err := sn.Remove(bg, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sn.Dir("k")); !os.IsNotExist(err) {
		t.Fatal("snapshot dir left")
	}
}

func TestManyLayers(t *testing.T) {
	requiresRoot(t)
	base := filepath.Join(t.TempDir(), strings.Repeat("long-layer-directory-name-", 3))
	var lowers []string
	for i := 0; i < 120; i++ {
		d := filepath.Join(base, strings.Repeat("x", 40)+string(rune('a'+i%26))+strings.Repeat("y", i/26))
		write(t, filepath.Join(d, "f"+string(rune('a'+i%26))), d)
		lowers = append(lowers, d)
	}
	sn, _ := overlay.New(t.TempDir())
	mounts, err := sn.Prepare(bg, "many", lowers)
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if err := snapshot.MountAll(mounts, target); err != nil {
		t.Fatal(err)
	}
	defer snapshot.Unmount(target)
	// Topmost layer wins for fa…fz.
	if b, _ := os.ReadFile(filepath.Join(target, "fa")); string(b) != lowers[104] {
		t.Fatalf("fa = %q", b)
	}
	if err := snapshot.Unmount(target); err != nil {
		t.Fatal(err)
	}
	// A huge relative list still fails with a clear error.
	long := []string{"lowerdir=" + strings.Repeat("/a/"+strings.Repeat("z", 100)+":", 60) + "/a/b"}
	if err := snapshot.MountAll([]snapshot.Mount{{Type: "overlay", Source: "overlay", Options: long}}, target); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "too many layers") {
		t.Fatalf("too long: %v", err)
	}
}

// TestDiffRoundTrip changes files through a mounted overlay, turns the upper
// dir into a layer with Diff, unpacks it, and checks that lower + new layer
// give the same view as the mounted snapshot did.
func TestDiffRoundTrip(t *testing.T) {
	requiresRoot(t)
	lower := t.TempDir()
	write(t, filepath.Join(lower, "etc/keep"), "keep")
	write(t, filepath.Join(lower, "etc/remove"), "remove")
	write(t, filepath.Join(lower, "var/lib/old/a"), "a")
	write(t, filepath.Join(lower, "var/lib/old/b"), "b")
	write(t, filepath.Join(lower, "modify"), "before")
	write(t, filepath.Join(lower, "gone/x"), "x")

	sn, _ := overlay.New(t.TempDir())
	mounts, err := sn.Prepare(bg, "c", []string{lower})
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	if err := snapshot.MountAll(mounts, mnt); err != nil {
		t.Fatal(err)
	}
	defer snapshot.Unmount(mnt)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(filepath.Join(mnt, "etc/remove")))
	must(os.RemoveAll(filepath.Join(mnt, "var/lib/old")))
	write(t, filepath.Join(mnt, "var/lib/old/c"), "c") // recreated dir → opaque
	must(os.RemoveAll(filepath.Join(mnt, "gone")))
	write(t, filepath.Join(mnt, "modify"), "after")
	write(t, filepath.Join(mnt, "new/file"), "new")
	must(os.Symlink("/etc/keep", filepath.Join(mnt, "new/abs-link")))
	must(os.Link(filepath.Join(mnt, "new/file"), filepath.Join(mnt, "new/hard")))
	must(os.Chmod(filepath.Join(mnt, "etc/keep"), 0o4711))
	must(os.Lchown(filepath.Join(mnt, "etc/keep"), 7, 8))
	must(unix.Mkfifo(filepath.Join(mnt, "new/fifo"), 0o600))
	want := view(t, mnt)
	must(snapshot.Unmount(mnt))

	var layer bytes.Buffer
	must(overlay.Diff(bg, sn.Upper("c"), &layer))
	names := tarNames(t, layer.Bytes())
	for _, n := range []string{"etc/.wh.remove", ".wh.gone", "var/lib/old/.wh..wh..opq", "new/hard"} {
		if !strings.Contains(names, n+"\n") {
			t.Errorf("diff lacks %s:\n%s", n, names)
		}
	}

	unpacked := t.TempDir()
	if _, err := image.Unpack(bg, bytes.NewReader(layer.Bytes()), unpacked); err != nil {
		t.Fatal(err)
	}
	sn2, _ := overlay.New(t.TempDir())
	mounts, err = sn2.Prepare(bg, "check", []string{lower, unpacked})
	if err != nil {
		t.Fatal(err)
	}
	mnt2 := t.TempDir()
	must(snapshot.MountAll(mounts, mnt2))
	defer snapshot.Unmount(mnt2)
	if got := view(t, mnt2); got != want {
		t.Fatalf("round trip differs:\n%s\nwant:\n%s", got, want)
	}
}

func tarNames(t *testing.T, b []byte) string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var sb strings.Builder
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sb.WriteString(h.Name + "\n")
	}
	return sb.String()
}
