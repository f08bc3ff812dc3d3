package volume

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/berthdev/berth/internal/errdefs"
)

func TestStore(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Create(ctx, "data", CreateOptions{Labels: map[string]string{"team": "a"}})
	if err != nil || v.Labels["team"] != "a" || v.Mountpoint != s.Path("data") || v.Driver != "local" {
		t.Fatalf("Create: %+v %v", v, err)
	}
	if _, err := s.Create(ctx, "data", CreateOptions{}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second Create: %v", err)
	}
	if _, err := s.Create(ctx, "../evil", CreateOptions{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Create(../evil): %v", err)
	}
	if v, fresh, err := s.Ensure(ctx, "data"); err != nil || fresh || v.Labels["team"] != "a" {
		t.Errorf("Ensure existing: %+v %v %v", v, fresh, err)
	}
	if _, fresh, err := s.Ensure(ctx, "other"); err != nil || !fresh {
		t.Errorf("Ensure new: %v %v", fresh, err)
	}
	if err := os.WriteFile(filepath.Join(s.Path("data"), "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	all, _ := s.List(ctx)
	if len(all) != 2 || all[0].Name != "data" || all[1].Name != "other" {
		t.Errorf("List: %v", all)
	}
	if err := s.Remove(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "data"); !errdefs.IsNotFound(err) {
		t.Errorf("Get after Remove: %v", err)
	}
	if err := s.Remove(ctx, "data"); !errdefs.IsNotFound(err) {
		t.Errorf("Remove twice: %v", err)
	}
}

func TestCopyUp(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "sub"), 0o750))
	must(os.WriteFile(filepath.Join(src, "sub", "f"), []byte("content"), 0o640))
	must(os.Symlink("/etc/passwd", filepath.Join(src, "link")))
	must(os.Chmod(src, 0o777|os.ModeSticky))
	if empty, err := IsEmpty(dst); err != nil || !empty {
		t.Fatalf("IsEmpty: %v %v", empty, err)
	}
	must(CopyUp(src, dst))
	if data, err := os.ReadFile(filepath.Join(dst, "sub", "f")); err != nil || string(data) != "content" {
		t.Errorf("file: %q %v", data, err)
	}
	if fi, _ := os.Stat(filepath.Join(dst, "sub", "f")); fi.Mode().Perm() != 0o640 {
		t.Errorf("file mode %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(dst, "sub")); fi.Mode().Perm() != 0o750 {
		t.Errorf("dir mode %v", fi.Mode())
	}
	if l, err := os.Readlink(filepath.Join(dst, "link")); err != nil || l != "/etc/passwd" {
		t.Errorf("symlink %q %v", l, err)
	}
	if fi, _ := os.Stat(dst); fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("top dir mode %v", fi.Mode())
	}
	if empty, _ := IsEmpty(dst); empty {
		t.Error("IsEmpty after copy")
	}
}
