package image

// Layer extraction is hand-written: no library unpacks an OCI layer into an
// overlayfs lower directory (whiteouts become 0:0 char devices and opaque
// xattrs) while refusing to follow symlinks out of the target. Every write is
// made with *at syscalls relative to a directory fd opened component by
// component with O_NOFOLLOW, so a symlink planted by an earlier entry is never
// followed; an entry whose parent is a symlink is refused.

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"

	// OverlayOpaqueXattr marks an overlayfs upper/lower dir as opaque.
	OverlayOpaqueXattr = "trusted.overlay.opaque"
)

// LayerDirs returns the unpacked, read-only directories of img's layers,
// bottom→top, ready to be overlay lower dirs. Each layer is unpacked once, on
// first use, into layers/<diffid-hex> and shared by every image and container.
func (s *Store) LayerDirs(ctx context.Context, img *Image) ([]string, error) {
	unlock, err := s.lock(ctx, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	_, man, err := s.loadManifest(img.Digest)
	if err != nil {
		return nil, fmt.Errorf("layer dirs of image %s: %w", img.ID, err)
	}
	if len(man.Layers) != len(img.DiffIDs) {
		return nil, fmt.Errorf("layer dirs of image %s: %w: %d layers, %d diff IDs", img.ID, errdefs.ErrCorrupt, len(man.Layers), len(img.DiffIDs))
	}
	dirs := make([]string, len(img.DiffIDs))
	for i, diffID := range img.DiffIDs {
		if dirs[i], err = s.unpackLayer(ctx, man.Layers[i], diffID); err != nil {
			return nil, fmt.Errorf("layer dirs of image %s: %w", img.ID, err)
		}
	}
	return dirs, nil
}

// unpackLayer makes sure layers/<diffid-hex> holds the layer. It unpacks into
// a temp dir and renames it into place; a per-layer flock keeps concurrent
// unpackers (goroutines or processes) from doing the work twice, and the
// rename is what makes the result visible, so a crash leaves no half layer.
func (s *Store) unpackLayer(ctx context.Context, desc v1.Descriptor, diffID v1.Hash) (string, error) {
	if diffID.Algorithm != "sha256" || len(diffID.Hex) != 64 || strings.ContainsAny(diffID.Hex, "/.") {
		return "", fmt.Errorf("unpack layer %s: bad diff ID: %w", diffID, errdefs.ErrCorrupt)
	}
	final := filepath.Join(s.layerDir(), diffID.Hex)
	if fi, err := os.Lstat(final); err == nil && fi.IsDir() {
		return final, nil
	}
	unlock, err := flockFile(ctx, filepath.Join(s.layerDir(), ".lock-"+diffID.Hex), unix.LOCK_EX)
	if err != nil {
		return "", err
	}
	defer unlock()
	if fi, err := os.Lstat(final); err == nil && fi.IsDir() {
		return final, nil
	}
	tmp, err := os.MkdirTemp(s.layerDir(), ".tmp-"+diffID.Hex[:12]+"-")
	if err != nil {
		return "", fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	rc, err := s.uncompressed(desc)
	if err != nil {
		return "", fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	defer rc.Close()
	got, err := Unpack(ctx, rc, tmp)
	if err != nil {
		return "", fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	if got != diffID {
		return "", fmt.Errorf("unpack layer %s: %w: uncompressed content has digest %s", diffID, errdefs.ErrCorrupt, got)
	}
	if err := syncFS(tmp); err != nil {
		return "", fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("unpack layer %s: %w", diffID, err)
	}
	ok = true
	return final, syncDir(s.layerDir())
}

func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// Unpack extracts the uncompressed OCI layer tar r into the existing
// directory dst, converting OCI whiteouts to overlayfs form (.wh.NAME → char
// device 0:0 NAME; .wh..wh..opq → trusted.overlay.opaque=y on the dir). It
// returns the sha256 of the whole stream (the layer's DiffID).
//
// Entries that would escape dst — ".." paths, hardlinks to outside, writes
// through a symlink — and device nodes are refused with errdefs.ErrCorrupt
// naming the entry; absolute names are taken relative to dst. Symlink targets
// are stored as they are and never followed. Modes (setuid included),
// ownership, mtimes and xattrs (except trusted.*) are kept.
// On error dst may hold a partial tree; the caller removes it.
func Unpack(ctx context.Context, r io.Reader, dst string) (v1.Hash, error) {
	rootFD, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("unpack into %s: %w", dst, err)
	}
	defer unix.Close(rootFD)
	h := sha256.New()
	stream := io.TeeReader(ctxReader{ctx, r}, h)
	x := &extractor{root: rootFD, rootPath: dst, chown: os.Geteuid() == 0}
	tr := tar.NewReader(stream)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return v1.Hash{}, ctx.Err()
			}
			return v1.Hash{}, fmt.Errorf("read layer tar: %w: %w", errdefs.ErrCorrupt, err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return v1.Hash{}, err
		}
	}
	// Hash the end-of-archive padding too: the DiffID covers every byte.
	if _, err := io.Copy(io.Discard, stream); err != nil {
		return v1.Hash{}, fmt.Errorf("read layer tar: %w", err)
	}
	x.finish()
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, nil
}

// extractor holds the state of one Unpack.
type extractor struct {
	root     int // fd of the destination dir
	rootPath string
	chown    bool
	dirTimes []dirTime // applied last: creating children changes a dir's mtime
}

type dirTime struct {
	rel  string
	hdr  *tar.Header
	root bool
}

func unsafeEntry(name, format string, args ...any) error {
	return fmt.Errorf("layer entry %q: %s: %w", name, fmt.Sprintf(format, args...), errdefs.ErrCorrupt)
}

// cleanRel turns a tar name into a clean path relative to the root, making
// absolute names relative and refusing names that climb out with "..".
func cleanRel(name string) (string, bool) {
	rel := path.Clean(strings.TrimLeft(name, "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return rel, true
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	rel, ok := cleanRel(hdr.Name)
	if !ok {
		return unsafeEntry(hdr.Name, "path escapes the layer root")
	}
	if rel == "." {
		if hdr.Typeflag != tar.TypeDir {
			return unsafeEntry(hdr.Name, "the layer root must be a directory")
		}
		if err := x.setAttrs(x.root, hdr); err != nil {
			return err
		}
		x.dirTimes = append(x.dirTimes, dirTime{rel: ".", hdr: hdr, root: true})
		return nil
	}
	dir, base := path.Split(rel)

	switch {
	case base == whiteoutOpaque:
		pfd, err := x.openDir(hdr.Name, dir, true)
		if err != nil {
			return err
		}
		defer unix.Close(pfd)
		if err := unix.Fsetxattr(pfd, OverlayOpaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("layer entry %q: mark opaque: %w", hdr.Name, err)
		}
		return nil
	case strings.HasPrefix(base, whiteoutMeta):
		return nil // aufs hardlink metadata (.wh..wh.plnk…): nothing to do
	case strings.HasPrefix(base, whiteoutPrefix):
		victim := strings.TrimPrefix(base, whiteoutPrefix)
		if victim == "" || victim == "." || victim == ".." {
			return unsafeEntry(hdr.Name, "bad whiteout name")
		}
		pfd, err := x.openDir(hdr.Name, dir, true)
		if err != nil {
			return err
		}
		defer unix.Close(pfd)
		if err := x.removeExisting(pfd, path.Join(dir, victim)); err != nil {
			return err
		}
		if err := unix.Mknodat(pfd, victim, unix.S_IFCHR, 0); err != nil {
			return fmt.Errorf("layer entry %q: create whiteout: %w", hdr.Name, err)
		}
		return x.lchown(pfd, victim, hdr)
	}

	pfd, err := x.openDir(hdr.Name, dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)

	switch hdr.Typeflag {
	case tar.TypeDir:
		var st unix.Stat_t
		err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := x.removeExisting(pfd, rel); err != nil {
				return err
			}
			err = unix.ENOENT
		}
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return fmt.Errorf("layer entry %q: mkdir: %w", hdr.Name, err)
			}
		} else if err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("layer entry %q: open dir: %w", hdr.Name, err)
		}
		defer unix.Close(fd)
		if err := x.setAttrs(fd, hdr); err != nil {
			return err
		}
		x.dirTimes = append(x.dirTimes, dirTime{rel: rel, hdr: hdr})
		return nil

	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // TypeRegA still appears in old archives
		if err := x.removeExisting(pfd, rel); err != nil {
			return err
		}
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("layer entry %q: create: %w", hdr.Name, err)
		}
		f := os.NewFile(uintptr(fd), filepath.Join(x.rootPath, rel))
		defer f.Close()
		if _, err := io.Copy(f, r); err != nil {
			return fmt.Errorf("layer entry %q: write: %w", hdr.Name, err)
		}
		if err := x.setAttrs(fd, hdr); err != nil {
			return err
		}
		return x.setTimes(pfd, base, hdr)

	case tar.TypeSymlink:
		if err := x.removeExisting(pfd, rel); err != nil {
			return err
		}
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return fmt.Errorf("layer entry %q: symlink: %w", hdr.Name, err)
		}
		if err := x.lchown(pfd, base, hdr); err != nil {
			return err
		}
		return x.setTimes(pfd, base, hdr)

	case tar.TypeLink:
		target, ok := cleanRel(hdr.Linkname)
		if !ok || target == "." {
			return unsafeEntry(hdr.Name, "hardlink target %q escapes the layer root", hdr.Linkname)
		}
		tdir, tbase := path.Split(target)
		tfd, err := x.openDir(hdr.Name, tdir, false)
		if err != nil {
			return err
		}
		defer unix.Close(tfd)
		var st unix.Stat_t
		if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return unsafeEntry(hdr.Name, "hardlink target %q is not in the layer", hdr.Linkname)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return unsafeEntry(hdr.Name, "hardlink target %q is a directory", hdr.Linkname)
		}
		if target == rel {
			return nil
		}
		if err := x.removeExisting(pfd, rel); err != nil {
			return err
		}
		if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
			return fmt.Errorf("layer entry %q: link to %q: %w", hdr.Name, hdr.Linkname, err)
		}
		return nil

	case tar.TypeFifo:
		if err := x.removeExisting(pfd, rel); err != nil {
			return err
		}
		if err := unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0); err != nil {
			return fmt.Errorf("layer entry %q: mkfifo: %w", hdr.Name, err)
		}
		fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
		defer unix.Close(fd)
		if err := x.lchown(pfd, base, hdr); err != nil {
			return err
		}
		// fchmod does not take O_PATH fds; chmod through /proc stays on this inode.
		if err := unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), uint32(hdr.Mode&0o7777)); err != nil {
			return fmt.Errorf("layer entry %q: chmod: %w", hdr.Name, err)
		}
		return x.setTimes(pfd, base, hdr)

	case tar.TypeChar, tar.TypeBlock:
		return unsafeEntry(hdr.Name, "device nodes are not allowed in image layers")

	case tar.TypeXGlobalHeader:
		return nil

	default:
		return unsafeEntry(hdr.Name, "unsupported tar entry type %q", hdr.Typeflag)
	}
}

// openDir opens the directory rel (relative to the root, "" or "dir/") one
// component at a time with O_NOFOLLOW, creating missing components when
// create is set. A component that is a symlink or not a directory is refused.
func (x *extractor) openDir(entry, rel string, create bool) (int, error) {
	fd, err := unix.Dup(x.root)
	if err != nil {
		return -1, err
	}
	walked := ""
	for _, c := range strings.Split(strings.Trim(rel, "/"), "/") {
		if c == "" || c == "." {
			continue
		}
		walked = path.Join(walked, c)
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err := unix.Mkdirat(fd, c, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(fd)
				return -1, fmt.Errorf("layer entry %q: mkdir %q: %w", entry, walked, err)
			}
			next, err = unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		if err != nil {
			var st unix.Stat_t
			serr := unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW)
			unix.Close(fd)
			switch {
			case serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
				return -1, unsafeEntry(entry, "parent %q is a symlink; refusing to write through it", walked)
			case serr == nil:
				return -1, unsafeEntry(entry, "parent %q is not a directory", walked)
			case errors.Is(err, unix.ENOENT):
				return -1, unsafeEntry(entry, "parent %q does not exist", walked)
			}
			return -1, fmt.Errorf("layer entry %q: open %q: %w", entry, walked, err)
		}
		unix.Close(fd)
		fd = next
	}
	return fd, nil
}

// removeExisting deletes whatever is at rel (a later tar entry replaces an
// earlier one). pfd is rel's parent, already opened safely.
func (x *extractor) removeExisting(pfd int, rel string) error {
	base := path.Base(rel)
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("layer entry %q: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(pfd, base, 0); err != nil {
			return fmt.Errorf("layer entry %q: replace: %w", rel, err)
		}
		return nil
	}
	// Parents of rel were opened with O_NOFOLLOW just now and only this
	// extractor writes under the root, so the path resolves to the same dir;
	// os.RemoveAll does not follow symlinks inside it.
	if err := os.RemoveAll(filepath.Join(x.rootPath, rel)); err != nil {
		return fmt.Errorf("layer entry %q: replace dir: %w", rel, err)
	}
	return nil
}

func (x *extractor) lchown(pfd int, base string, hdr *tar.Header) error {
	if !x.chown {
		return nil
	}
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("layer entry %q: chown: %w", hdr.Name, err)
	}
	return nil
}

// setAttrs applies owner, mode and xattrs to an open file or dir. Owner goes
// first because chown clears setuid/setgid bits.
func (x *extractor) setAttrs(fd int, hdr *tar.Header) error {
	if x.chown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("layer entry %q: chown: %w", hdr.Name, err)
		}
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return fmt.Errorf("layer entry %q: chmod: %w", hdr.Name, err)
	}
	for k, v := range xattrs(hdr) {
		if strings.HasPrefix(k, "trusted.") {
			continue // overlayfs and other privileged metadata is never taken from a layer
		}
		if err := unix.Fsetxattr(fd, k, []byte(v), 0); err != nil &&
			!errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("layer entry %q: set xattr %s: %w", hdr.Name, k, err)
		}
	}
	return nil
}

func xattrs(hdr *tar.Header) map[string]string {
	out := map[string]string{}
	for k, v := range hdr.Xattrs { //nolint:staticcheck // older writers fill only Xattrs
		out[k] = v
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			out[name] = v
		}
	}
	return out
}

func (x *extractor) setTimes(pfd int, base string, hdr *tar.Header) error {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("layer entry %q: set times: %w", hdr.Name, err)
	}
	return nil
}

// finish sets directory times, deepest last-created first. Each dir is
// reopened safely: a later entry may have replaced it or a parent.
func (x *extractor) finish() {
	for i := len(x.dirTimes) - 1; i >= 0; i-- {
		d := x.dirTimes[i]
		if d.root {
			_ = x.setTimes(x.root, ".", d.hdr)
			continue
		}
		dir, base := path.Split(d.rel)
		pfd, err := x.openDir(d.hdr.Name, dir, false)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			_ = x.setTimes(pfd, base, d.hdr)
		}
		unix.Close(pfd)
	}
}
