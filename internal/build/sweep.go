package build

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/snapshot"
)

// A build keeps its mount points in tmp/<run>/, next to a file it holds an
// flock on until it ends. A mount point is named like the snapshot mounted
// there, so a build that was killed can be cleaned up by the next one.

// startRun makes the run's directory and takes its lock; the returned
// function releases both.
func (b *Builder) startRun() (dir string, end func(), err error) {
	dir, err = os.MkdirTemp(b.tmp, "run-")
	if err != nil {
		return "", nil, fmt.Errorf("build: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build: lock %s: %w", dir, err)
	}
	return dir, func() {
		os.RemoveAll(dir)
		f.Close()
	}, nil
}

// sweep unmounts and removes what killed builds left: the mount points and
// snapshots of every run directory whose lock nobody holds.
func (b *Builder) sweep(ctx context.Context) {
	ents, err := os.ReadDir(b.tmp)
	if err != nil {
		return
	}
	for _, ent := range ents {
		dir := filepath.Join(b.tmp, ent.Name())
		f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			// A run that died before locking, or not ours.
			if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
				b.sweepDir(ctx, dir)
			}
			continue
		}
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			b.sweepDir(ctx, dir)
		}
		f.Close()
	}
}

func (b *Builder) sweepDir(ctx context.Context, dir string) {
	ents, _ := os.ReadDir(dir)
	for _, ent := range ents {
		if !ent.IsDir() {
			continue
		}
		mnt := filepath.Join(dir, ent.Name())
		if snapshot.Unmount(mnt) != nil {
			return // leave it for a later sweep
		}
		_ = b.snaps.Remove(ctx, ent.Name())
	}
	os.RemoveAll(dir)
}
