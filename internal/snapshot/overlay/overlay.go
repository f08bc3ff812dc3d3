package overlay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/snapshot"
)

// Snapshotter keeps overlay snapshots under root/<key>/{upper,work}.
type Snapshotter struct {
	root string
}

var _ snapshot.Snapshotter = (*Snapshotter)(nil)

// New returns a Snapshotter rooted at root, creating it if needed.
func New(root string) (*Snapshotter, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open overlay snapshotter %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o711); err != nil {
		return nil, fmt.Errorf("open overlay snapshotter %s: %w", root, err)
	}
	return &Snapshotter{root: abs}, nil
}

// mountOptions are always set: no inode index, no directory redirects, no
// metadata-only copy-up, so an upper dir is a complete, self-contained diff.
var mountOptions = []string{"index=off", "redirect_dir=off", "metacopy=off"}

func checkKey(key string) error {
	if key == "" || key == "." || key == ".." || strings.ContainsAny(key, "/\x00:,") {
		return fmt.Errorf("snapshot key %q: %w", key, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Dir returns the directory of snapshot key (holding upper/ and work/).
func (s *Snapshotter) Dir(key string) string { return filepath.Join(s.root, key) }

// Upper returns the upper (writable) dir of snapshot key, the input of Diff.
func (s *Snapshotter) Upper(key string) string { return filepath.Join(s.root, key, "upper") }

// Prepare creates root/<key>/{upper,work} and returns the overlay mount of
// upper over lowers. lowers go bottom→top (as image.Store.LayerDirs returns
// them); overlayfs lists them top first, which Prepare takes care of. With no
// lowers an empty lower dir is used. When absolute lower paths would not fit
// in a page of mount data, short symlinks root/<key>/l/<n> name them instead.
func (s *Snapshotter) Prepare(ctx context.Context, key string, lowers []string) ([]snapshot.Mount, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("prepare snapshot: %w", err)
	}
	for _, l := range lowers {
		if !filepath.IsAbs(l) || strings.ContainsAny(l, ":,") {
			return nil, fmt.Errorf("prepare snapshot %s: lower dir %q must be absolute without ':' or ',': %w", key, l, errdefs.ErrInvalidArgument)
		}
	}
	dir := s.Dir(key)
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("prepare snapshot %s: %w", key, errdefs.ErrAlreadyExists)
		}
		return nil, fmt.Errorf("prepare snapshot %s: %w", key, err)
	}
	m, err := s.prepare(dir, lowers)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("prepare snapshot %s: %w", key, err)
	}
	return []snapshot.Mount{m}, nil
}

func (s *Snapshotter) prepare(dir string, lowers []string) (snapshot.Mount, error) {
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return snapshot.Mount{}, err
		}
	}
	if len(lowers) == 0 {
		empty := filepath.Join(dir, "empty")
		if err := os.Mkdir(empty, 0o755); err != nil {
			return snapshot.Mount{}, err
		}
		lowers = []string{empty}
	}
	top := make([]string, len(lowers))
	for i, l := range lowers {
		top[len(lowers)-1-i] = l
	}
	opts := func(ls []string) []string {
		return append([]string{"lowerdir=" + strings.Join(ls, ":"), "upperdir=" + upper, "workdir=" + work}, mountOptions...)
	}
	o := opts(top)
	if len(strings.Join(o, ",")) >= os.Getpagesize() {
		// snapshot.MountAll makes these relative to l/ if still too long.
		ldir := filepath.Join(dir, "l")
		if err := os.Mkdir(ldir, 0o700); err != nil {
			return snapshot.Mount{}, err
		}
		short := make([]string, len(top))
		for i, l := range top {
			short[i] = filepath.Join(ldir, strconv.Itoa(i))
			if err := os.Symlink(l, short[i]); err != nil {
				return snapshot.Mount{}, err
			}
		}
		o = opts(short)
	}
	return snapshot.Mount{Type: "overlay", Source: "overlay", Options: o}, nil
}

// Remove deletes snapshot key. The caller unmounts it first.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("remove snapshot: %w", err)
	}
	if err := os.RemoveAll(s.Dir(key)); err != nil {
		return fmt.Errorf("remove snapshot %s: %w", key, err)
	}
	return nil
}
