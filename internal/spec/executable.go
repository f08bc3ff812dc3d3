package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/berthdev/berth/internal/errdefs"
)

// execError reads like the runtime's own message (`exec: "x": executable file
// not found in $PATH`) while carrying an errdefs class.
type execError struct {
	msg   string
	class error
}

func (e *execError) Error() string { return e.msg }
func (e *execError) Unwrap() error { return e.class }

// ResolveExecutable checks, before anything runs, that args[0] names an
// executable regular file inside rootfs: a bare name is searched in the PATH
// from env (DefaultPath when env has none), an absolute path is taken as is.
// Symlinks are followed inside rootfs only. A relative path with a slash
// depends on the working directory and is not checked.
//
// A missing command is an error wrapping errdefs.ErrNotFound, e.g.
// `exec: "nosuch": executable file not found in $PATH`; one that exists but
// cannot be executed wraps errdefs.ErrInvalidArgument.
func ResolveExecutable(rootfs string, args []string, env []string) error {
	if len(args) == 0 || args[0] == "" {
		return fmt.Errorf("resolve executable: no command: %w", errdefs.ErrInvalidArgument)
	}
	name := args[0]
	switch {
	case path.IsAbs(name):
		return checkExecutable(rootfs, name, name)
	case strings.Contains(name, "/"):
		return nil
	}
	pathEnv := strings.TrimPrefix(DefaultPath, "PATH=")
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	var denied error
	for _, dir := range strings.Split(pathEnv, ":") {
		if !path.IsAbs(dir) {
			continue
		}
		err := checkExecutable(rootfs, name, path.Join(dir, name))
		if err == nil {
			return nil
		}
		if errors.Is(err, errdefs.ErrInvalidArgument) && denied == nil {
			denied = err
		}
	}
	if denied != nil {
		return denied
	}
	return &execError{msg: fmt.Sprintf("exec: %q: executable file not found in $PATH", name), class: errdefs.ErrNotFound}
}

func checkExecutable(rootfs, name, p string) error {
	full, err := securejoin.SecureJoin(rootfs, p)
	if err != nil {
		return &execError{msg: fmt.Sprintf("exec: %q: %v", name, err), class: errdefs.ErrInvalidArgument}
	}
	fi, err := os.Stat(full)
	if errors.Is(err, fs.ErrNotExist) {
		return &execError{msg: fmt.Sprintf("exec: %q: stat %s: no such file or directory", name, p), class: errdefs.ErrNotFound}
	}
	if err != nil {
		return &execError{msg: fmt.Sprintf("exec: %q: stat %s: %v", name, p, err), class: errdefs.ErrInvalidArgument}
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return &execError{msg: fmt.Sprintf("exec: %q: permission denied", name), class: errdefs.ErrInvalidArgument}
	}
	return nil
}
