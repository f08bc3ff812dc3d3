package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/snapshot"
	"github.com/berthdev/berth/internal/snapshot/overlay"
)

func TestUnpackRefusesUnsafeLayers(t *testing.T) {
	requiresRoot(t)
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		entries []entry
		msg     string
	}{
		{"dotdot", []entry{{name: "../../../../../../" + victim, body: "pwned"}}, "escapes"},
		{"dotdot inside", []entry{{name: "a/../../x", body: "pwned"}}, "escapes"},
		{"symlink then write through (absolute)", []entry{
			{name: "evil", link: outside, typ: tar.TypeSymlink},
			{name: "evil/victim", body: "pwned"},
		}, "symlink"},
		{"symlink then write through (relative)", []entry{
			{name: "a/", typ: tar.TypeDir},
			{name: "a/evil", link: "../../../../../../../../" + outside, typ: tar.TypeSymlink},
			{name: "a/evil/victim", body: "pwned"},
		}, "symlink"},
		{"symlink then mkdir through", []entry{
			{name: "evil", link: outside, typ: tar.TypeSymlink},
			{name: "evil/newdir/", typ: tar.TypeDir},
		}, "symlink"},
		{"symlink then whiteout through", []entry{
			{name: "evil", link: outside, typ: tar.TypeSymlink},
			{name: "evil/.wh.victim", body: ""},
		}, "symlink"},
		{"hardlink escape", []entry{{name: "h", link: "../../../../../../" + victim, typ: tar.TypeLink}}, "escapes"},
		{"hardlink through symlink", []entry{
			{name: "evil", link: outside, typ: tar.TypeSymlink},
			{name: "h", link: "evil/victim", typ: tar.TypeLink},
		}, "symlink"},
		{"char device", []entry{{name: "dev/mem", typ: tar.TypeChar, major: 1, minor: 1}}, "device"},
		{"block device", []entry{{name: "sda", typ: tar.TypeBlock, major: 8}}, "device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := t.TempDir()
			_, err := Unpack(bg, bytes.NewReader(tarBytes(t, tc.entries)), dst)
			if !errors.Is(err, errdefs.ErrCorrupt) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Unpack: %v, want ErrCorrupt mentioning %q", err, tc.msg)
			}
			if b, _ := os.ReadFile(victim); string(b) != "original" {
				t.Fatalf("victim overwritten: %q", b)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 1 {
				t.Fatalf("outside dir changed: %v", ents)
			}

			// Through the store: refused at LayerDirs, nothing left in layers/.
			s := openStore(t)
			img, err := s.Write(bg, imageOf(t, nil, layerOf(t, tc.entries)), "evil")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.LayerDirs(bg, img); !errors.Is(err, errdefs.ErrCorrupt) {
				t.Fatalf("LayerDirs: %v", err)
			}
			if ents, _ := os.ReadDir(s.layerDir()); len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), ".lock-") {
				t.Fatalf("layers/ not clean: %v", ents)
			}
		})
	}
}

func TestUnpackPreservesMetadata(t *testing.T) {
	requiresRoot(t)
	dst := t.TempDir()
	es := []entry{
		{name: "/bin/", typ: tar.TypeDir, mode: 0o711, uid: 2, gid: 3},
		{name: "/bin/su", body: "su", mode: 0o4755, uid: 0, gid: 0},
		{name: "./bin/sg", body: "sg", mode: 0o2750, uid: 1000, gid: 1001},
		{name: "bin/sh", link: "/bin/busybox", typ: tar.TypeSymlink, uid: 5, gid: 6},
		{name: "bin/cap", body: "x", xattrs: map[string]string{"user.berth": "yes", "trusted.overlay.redirect": "/etc"}},
		{name: "bin/hard", link: "/bin/su", typ: tar.TypeLink},
		{name: "fifo", typ: tar.TypeFifo, mode: 0o620},
		{name: "dup", body: "first"},
		{name: "dup", body: "second"},
		{name: "a/b/c/deep", body: "implicit parents"},
	}
	if _, err := Unpack(bg, bytes.NewReader(tarBytes(t, es)), dst); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	check := func(p string, mode os.FileMode, uid, gid uint32) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dst, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != uint32(mode) || st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: mode %o uid %d gid %d", p, st.Mode&0o7777, st.Uid, st.Gid)
		}
		if st.Mtim.Sec != mt.Unix() {
			t.Errorf("%s: mtime %d", p, st.Mtim.Sec)
		}
	}
	check("bin", 0o711, 2, 3)
	check("bin/su", 0o4755, 0, 0)
	check("bin/sg", 0o2750, 1000, 1001)
	check("fifo", 0o620, 0, 0)
	var st unix.Stat_t
	_ = unix.Lstat(filepath.Join(dst, "bin/sh"), &st)
	if l, _ := os.Readlink(filepath.Join(dst, "bin/sh")); l != "/bin/busybox" || st.Uid != 5 {
		t.Errorf("bin/sh -> %q uid %d", l, st.Uid)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(dst, "bin/cap"), "user.berth", buf); err != nil || string(buf[:n]) != "yes" {
		t.Errorf("user xattr: %q %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(dst, "bin/cap"), "trusted.overlay.redirect", buf); err == nil {
		t.Errorf("trusted xattr copied from the layer")
	}
	var a, b unix.Stat_t
	_ = unix.Stat(filepath.Join(dst, "bin/su"), &a)
	_ = unix.Stat(filepath.Join(dst, "bin/hard"), &b)
	if a.Ino != b.Ino {
		t.Errorf("hardlink not linked")
	}
	if d, _ := os.ReadFile(filepath.Join(dst, "dup")); string(d) != "second" {
		t.Errorf("dup = %q", d)
	}
	if d, _ := os.ReadFile(filepath.Join(dst, "a/b/c/deep")); string(d) != "implicit parents" {
		t.Errorf("deep = %q", d)
	}
}

// tree lists a mounted rootfs: path → type/content.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case fi.IsDir():
			out = append(out, rel+"/")
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out = append(out, rel+" -> "+l)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if len(b) > 32 {
				b = b[:32]
			}
			out = append(out, rel+" = "+string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestWhiteoutsGiveOverlayView(t *testing.T) {
	requiresRoot(t)
	s := openStore(t)
	base := layerOf(t, []entry{
		{name: "a/", typ: tar.TypeDir},
		{name: "a/gone", body: "1"},
		{name: "a/kept", body: "2"},
		{name: "b/", typ: tar.TypeDir},
		{name: "b/hidden", body: "3"},
		{name: "b/sub/", typ: tar.TypeDir},
		{name: "b/sub/hidden", body: "4"},
		{name: "c", body: "c"},
		{name: "d/", typ: tar.TypeDir},
		{name: "d/x", body: "x"},
	})
	top := layerOf(t, []entry{
		{name: "a/.wh.gone", body: ""},
		{name: "b/", typ: tar.TypeDir},
		{name: "b/.wh..wh..opq", body: ""},
		{name: "b/new", body: "5"},
		{name: ".wh.c", body: ""},
		{name: ".wh.d", body: ""},
		{name: "e", body: "e"},
	})
	img, err := s.Write(bg, imageOf(t, nil, base, top), "wh")
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := s.LayerDirs(bg, img)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dirs[1], "a/gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Fatalf("whiteout not a 0:0 char device: %+v %v", st, err)
	}

	sn, err := overlay.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := sn.Prepare(bg, "c1", dirs)
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if err := snapshot.MountAll(mounts, target); err != nil {
		t.Fatal(err)
	}
	defer snapshot.Unmount(target)
	got := strings.Join(tree(t, target), "\n")
	want := strings.Join([]string{"a/", "a/kept = 2", "b/", "b/new = 5", "e = e"}, "\n")
	if got != want {
		t.Fatalf("merged view:\n%s\nwant:\n%s", got, want)
	}
	if err := snapshot.Unmount(target); err != nil {
		t.Fatal(err)
	}
	if err := sn.Remove(bg, "c1"); err != nil {
		t.Fatal(err)
	}
}
