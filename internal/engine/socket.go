package engine

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Unix socket paths are limited to 107 bytes, and berth's state dir (with a
// 64-hex workload ID) can be longer than that. Both ends therefore name the
// socket through a descriptor of its directory: /proc/self/fd/N/NAME is
// short whatever the real path.

func withDirFD(path string, fn func(short string) error) error {
	dir, name := filepath.Split(path)
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	return fn(fmt.Sprintf("/proc/self/fd/%d/%s", fd, name))
}

func listenUnix(path string) (net.Listener, error) {
	var ln net.Listener
	err := withDirFD(path, func(short string) error {
		var err error
		ln, err = net.Listen("unix", short)
		return err
	})
	if ln != nil {
		// The listener would unlink the short name on Close; unlink the real one.
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
	}
	return ln, err
}

func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	var conn net.Conn
	err := withDirFD(path, func(short string) error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, "unix", short)
		return err
	})
	return conn, err
}
