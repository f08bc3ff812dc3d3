package spec

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/berthdev/berth/internal/errdefs"
)

func TestResolveExecutable(t *testing.T) {
	outside := writeRootfs(t, map[string]string{"escape": "#!/bin/sh\n"})
	root := writeRootfs(t, map[string]string{
		"bin/busybox":     "\x7fELF",
		"opt/tool/run":    "\x7fELF",
		"etc/not-exec":    "data",
		"usr/bin/.keep":   "",
		"custom/bin/prog": "\x7fELF",
	})
	if err := os.Chmod(filepath.Join(root, "etc/not-exec"), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"bin/sh":       "busybox",
		"usr/bin/env":  "/bin/busybox",
		"bin/escape":   filepath.Join(outside, "escape"),
		"bin/dangling": "/nowhere",
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		args  []string
		env   []string
		class error
		msg   string
	}{
		{name: "bare", args: []string{"sh", "-c", "true"}},
		{name: "absolute symlink inside", args: []string{"env"}},
		{name: "absolute", args: []string{"/opt/tool/run"}},
		{name: "custom PATH", args: []string{"prog"}, env: []string{"PATH=/custom/bin"}},
		{name: "relative with slash unchecked", args: []string{"./whatever"}},
		{name: "missing", args: []string{"nosuch"}, class: errdefs.ErrNotFound,
			msg: `exec: "nosuch": executable file not found in $PATH`},
		{name: "not in custom PATH", args: []string{"sh"}, env: []string{"PATH=/custom/bin"}, class: errdefs.ErrNotFound},
		{name: "missing absolute", args: []string{"/bin/nosuch"}, class: errdefs.ErrNotFound,
			msg: `exec: "/bin/nosuch": stat /bin/nosuch: no such file or directory`},
		{name: "escaping symlink", args: []string{"escape"}, class: errdefs.ErrNotFound},
		{name: "dangling", args: []string{"dangling"}, class: errdefs.ErrNotFound},
		{name: "not executable", args: []string{"/etc/not-exec"}, class: errdefs.ErrInvalidArgument},
		{name: "directory", args: []string{"/usr/bin"}, class: errdefs.ErrInvalidArgument},
		{name: "empty", args: nil, class: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ResolveExecutable(root, tt.args, tt.env)
			if tt.class == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.class) {
				t.Fatalf("err %v, want class %v", err, tt.class)
			}
			if tt.msg != "" && err.Error() != tt.msg {
				t.Errorf("message %q, want %q", err.Error(), tt.msg)
			}
		})
	}
}
