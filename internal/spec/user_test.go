package spec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berthdev/berth/internal/errdefs"
)

func writeRootfs(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const passwd = `root:x:0:0:root:/root:/bin/sh
# comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
broken line
`

const group = `root:x:0:
wheel:x:10:app,other
app:x:1000:
docker:x:999:app
staff:x:50:
`

func TestWithUser(t *testing.T) {
	root := writeRootfs(t, map[string]string{"etc/passwd": passwd, "etc/group": group})
	tests := []struct {
		user      string
		uid, gid  uint32
		sgids     []uint32
		home      string
		wantClass error
	}{
		{user: "", uid: 0, gid: 0, home: "/root"},
		{user: "root", uid: 0, gid: 0, home: "/root"},
		{user: "app", uid: 1000, gid: 1000, sgids: []uint32{10, 999}, home: "/home/app"},
		{user: "1000", uid: 1000, gid: 1000, sgids: []uint32{10, 999}, home: "/home/app"},
		{user: "app:staff", uid: 1000, gid: 50, home: "/home/app"},
		{user: "app:50", uid: 1000, gid: 50, home: "/home/app"},
		{user: "app:4242", uid: 1000, gid: 4242, home: "/home/app"},
		{user: "4242", uid: 4242, gid: 0, home: "/"},
		{user: "4242:4343", uid: 4242, gid: 4343, home: "/"},
		{user: "daemon", uid: 1, gid: 1, home: "/usr/sbin"},
		{user: "nosuch", wantClass: errdefs.ErrInvalidArgument},
		{user: "app:nogroup", wantClass: errdefs.ErrInvalidArgument},
		{user: "app:", wantClass: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			s, err := Generate(context.Background(), WithUser(root, tt.user))
			if tt.wantClass != nil {
				if !errors.Is(err, tt.wantClass) {
					t.Fatalf("err %v, want %v", err, tt.wantClass)
				}
				if name, _, _ := strings.Cut(tt.user, ":"); tt.user == "nosuch" && !strings.Contains(err.Error(), name) {
					t.Errorf("error %q does not name %q", err, name)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u := s.Process.User
			if u.UID != tt.uid || u.GID != tt.gid || !slices.Equal(u.AdditionalGids, tt.sgids) {
				t.Errorf("user %+v, want %d:%d %v", u, tt.uid, tt.gid, tt.sgids)
			}
			if !slices.Contains(s.Process.Env, "HOME="+tt.home) {
				t.Errorf("env %v, want HOME=%s", s.Process.Env, tt.home)
			}
		})
	}
}

func TestWithUserNoPasswd(t *testing.T) {
	root := t.TempDir()
	s, err := Generate(context.Background(), WithUser(root, "1234:5678"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Process.User.UID != 1234 || s.Process.User.GID != 5678 {
		t.Errorf("user %+v", s.Process.User)
	}
	if _, err := Generate(context.Background(), WithUser(root, "app")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("name without passwd: %v", err)
	}
}

func TestWithUserKeepsHome(t *testing.T) {
	root := writeRootfs(t, map[string]string{"etc/passwd": passwd})
	for _, opts := range [][]Opt{
		{WithEnv([]string{"HOME=/custom"}), WithUser(root, "app")},
		{WithUser(root, "app"), WithEnv([]string{"HOME=/custom"})},
	} {
		s, err := Generate(context.Background(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(s.Process.Env, "HOME=/custom") || slices.Contains(s.Process.Env, "HOME=/home/app") {
			t.Errorf("env %v", s.Process.Env)
		}
	}
}

// An /etc/passwd symlink pointing outside the rootfs resolves inside it.
func TestWithUserSymlinkStaysInRootfs(t *testing.T) {
	outside := writeRootfs(t, map[string]string{"passwd": "evil:x:0:0::/evil:/bin/sh\n"})
	root := writeRootfs(t, map[string]string{"real/passwd": "app:x:1000:1000::/home/app:/bin/sh\n"})
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "passwd"), filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(context.Background(), WithUser(root, "evil")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("read passwd outside the rootfs: %v", err)
	}
	if err := os.Remove(filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../real/passwd", filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	s, err := Generate(context.Background(), WithUser(root, "app"))
	if err != nil || s.Process.User.UID != 1000 {
		t.Errorf("relative symlink inside the rootfs: %v %+v", err, s)
	}
}
