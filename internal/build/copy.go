package build

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/moby/patternmatcher"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/errdefs"
)

// copier copies files for COPY and ADD from a source tree (the build
// context, or another stage's or image's root filesystem) into a mounted
// root filesystem. Paths inside either tree are resolved with securejoin,
// so symlinks never lead out of them.
type copier struct {
	srcRoot string
	ignore  *patternmatcher.PatternMatcher // .dockerignore (context only)
	exclude *patternmatcher.PatternMatcher // --exclude
	// fromContext resets ownership to 0:0 (files from another stage keep theirs).
	fromContext bool
	chown       *owner       // --chown
	chmod       *fs.FileMode // --chmod
	add         bool         // ADD: extract local archives
	noUnpack    bool         // ADD --unpack=false

	dirTimes []dirTime
}

type owner struct{ uid, gid int }

type dirTime struct {
	path  string
	mtime time.Time
}

// notFound is the error for a source that does not exist.
func notFound(src string) error {
	return fmt.Errorf("%s: file not found in build context or excluded by .dockerignore: %w", src, errdefs.ErrNotFound)
}

func hasMeta(p string) bool { return strings.ContainsAny(p, `*?[\`) }

// cleanRel turns a source path into a clean path relative to the source root.
func cleanRel(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

func (c *copier) excluded(rel string) bool {
	if rel == "" {
		return false
	}
	for _, pm := range []*patternmatcher.PatternMatcher{c.ignore, c.exclude} {
		if pm == nil {
			continue
		}
		if m, err := pm.MatchesOrParentMatches(rel); err == nil && m {
			return true
		}
	}
	return false
}

func (c *copier) exclusions() bool {
	return (c.ignore != nil && c.ignore.Exclusions()) || (c.exclude != nil && c.exclude.Exclusions())
}

// match expands the source patterns into existing, not excluded paths
// relative to the source root.
func (c *copier) match(patterns []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, p := range patterns {
		rel := cleanRel(p)
		var found []string
		if hasMeta(rel) {
			m, err := c.glob(rel)
			if err != nil {
				return nil, err
			}
			for _, r := range m {
				if !c.excluded(r) {
					found = append(found, r)
				}
			}
			if len(found) == 0 {
				return nil, fmt.Errorf("%s: no source files were specified (nothing matches): %w", p, errdefs.ErrNotFound)
			}
		} else {
			if c.excluded(rel) {
				return nil, notFound(p)
			}
			abs, err := securejoin.SecureJoin(c.srcRoot, rel)
			if err != nil {
				return nil, err
			}
			if _, err := os.Stat(abs); err != nil {
				return nil, notFound(p)
			}
			found = []string{rel}
		}
		for _, f := range found {
			if !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	return out, nil
}

// glob matches pattern (clean, relative) component by component, resolving
// each directory inside the source root.
func (c *copier) glob(pattern string) ([]string, error) {
	cur := []string{""}
	for _, comp := range strings.Split(pattern, "/") {
		var next []string
		for _, base := range cur {
			if !hasMeta(comp) {
				next = append(next, path.Join(base, comp))
				continue
			}
			dir, err := securejoin.SecureJoin(c.srcRoot, base)
			if err != nil {
				return nil, err
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				continue
			}
			for _, e := range ents {
				ok, err := path.Match(comp, e.Name())
				if err != nil {
					return nil, fmt.Errorf("pattern %q: %w: %w", pattern, err, errdefs.ErrInvalidArgument)
				}
				if ok {
					next = append(next, path.Join(base, e.Name()))
				}
			}
		}
		cur = next
	}
	var out []string
	for _, r := range cur {
		abs, err := securejoin.SecureJoin(c.srcRoot, r)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err == nil {
			out = append(out, r)
		}
	}
	sort.Strings(out)
	return out, nil
}

// walk calls fn for src (relative to the source root, followed when it is
// a symlink) and, when it is a directory, for everything under it that is
// not excluded, in lexical order. rel is relative to src ("" for src).
func (c *copier) walk(src string, fn func(rel, abs string, fi fs.FileInfo) error) error {
	top, err := securejoin.SecureJoin(c.srcRoot, src)
	if err != nil {
		return err
	}
	fi, err := os.Stat(top)
	if err != nil {
		return notFound(src)
	}
	if !fi.IsDir() {
		return fn("", top, fi)
	}
	return filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(top, p)
		if err != nil {
			return err
		}
		if rel == "." {
			rel = ""
		}
		rel = filepath.ToSlash(rel)
		if rel != "" && c.excluded(path.Join(src, rel)) {
			if d.IsDir() && !c.exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		return fn(rel, p, info)
	})
}

// hash adds to h everything about srcs that a copy depends on: names,
// types, permissions, sizes, link targets and contents.
func (c *copier) hash(h hash.Hash, srcs []string) error {
	for _, src := range srcs {
		fmt.Fprintf(h, "src %q\n", src)
		err := c.walk(src, func(rel, abs string, fi fs.FileInfo) error {
			fmt.Fprintf(h, "%q %o %d", rel, fi.Mode(), fi.Size())
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				t, err := os.Readlink(abs)
				if err != nil {
					return err
				}
				fmt.Fprintf(h, " -> %q", t)
			case fi.Mode().IsRegular():
				f, err := os.Open(abs)
				if err != nil {
					return err
				}
				fh := sha256.New()
				_, err = io.Copy(fh, f)
				f.Close()
				if err != nil {
					return err
				}
				fmt.Fprintf(h, " %x", fh.Sum(nil))
			}
			_, err := io.WriteString(h, "\n")
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// copyTo copies srcs into the root filesystem rootfs at dest (absolute;
// a directory when destDir), with Docker's rules: a directory's contents
// are copied, not the directory; a file goes to dest, or into it when dest
// is a directory.
func (c *copier) copyTo(rootfs string, srcs []string, dest string, destDir bool) error {
	for _, src := range srcs {
		top, err := securejoin.SecureJoin(c.srcRoot, src)
		if err != nil {
			return err
		}
		fi, err := os.Stat(top)
		if err != nil {
			return notFound(src)
		}
		switch {
		case fi.IsDir():
			err = c.walk(src, func(rel, abs string, fi fs.FileInfo) error {
				if rel == "" {
					_, err := c.mkdirAll(rootfs, dest)
					return err
				}
				return c.put(rootfs, path.Join(dest, rel), abs, fi)
			})
		case c.add && !c.noUnpack && isArchive(top):
			err = c.extract(rootfs, top, dest)
		default:
			target := dest
			if destDir || isDirIn(rootfs, dest) {
				target = path.Join(dest, path.Base("/"+src))
			}
			err = c.put(rootfs, target, top, fi)
		}
		if err != nil {
			return err
		}
	}
	return c.finish()
}

// writeContent writes an inline (heredoc) source at target.
func (c *copier) writeContent(rootfs, target string, data []byte) error {
	fi := inlineInfo{name: path.Base(target), size: int64(len(data))}
	pdir, err := c.mkdirAll(rootfs, path.Dir(target))
	if err != nil {
		return err
	}
	host := filepath.Join(pdir, path.Base(target))
	return c.writeFile(host, bytes.NewReader(data), fi, c.ownerFor(0, 0), c.modeFor(fi.Mode()), time.Now())
}

// finish sets the directories' modification times, deepest first, once
// nothing more is written into them.
func (c *copier) finish() error {
	for i := len(c.dirTimes) - 1; i >= 0; i-- {
		d := c.dirTimes[i]
		_ = setTimes(d.path, d.mtime)
	}
	c.dirTimes = nil
	return nil
}

func isDirIn(rootfs, p string) bool {
	abs, err := securejoin.SecureJoin(rootfs, p)
	if err != nil {
		return false
	}
	fi, err := os.Stat(abs)
	return err == nil && fi.IsDir()
}

func (c *copier) ownerFor(uid, gid int) owner {
	switch {
	case c.chown != nil:
		return *c.chown
	case c.fromContext:
		return owner{0, 0}
	}
	return owner{uid, gid}
}

func (c *copier) modeFor(m fs.FileMode) fs.FileMode {
	if c.chmod != nil {
		return (m &^ (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)) | *c.chmod
	}
	return m
}

// mkdirAll makes sure the directory dir (absolute, inside rootfs) exists,
// creating missing components 0755 owned by --chown's owner or root, and
// returns its resolved host path.
func (c *copier) mkdirAll(rootfs, dir string) (string, error) {
	resolved, err := securejoin.SecureJoin(rootfs, dir)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(resolved); err == nil {
		if !fi.IsDir() {
			return "", fmt.Errorf("%s is not a directory: %w", dir, errdefs.ErrInvalidArgument)
		}
		return resolved, nil
	}
	own := c.ownerFor(0, 0)
	cur := "/"
	for _, comp := range strings.Split(strings.Trim(path.Clean(dir), "/"), "/") {
		if comp == "" {
			continue
		}
		cur = path.Join(cur, comp)
		hp, err := securejoin.SecureJoin(rootfs, cur)
		if err != nil {
			return "", err
		}
		fi, err := os.Stat(hp)
		if err == nil {
			if !fi.IsDir() {
				return "", fmt.Errorf("%s is not a directory: %w", cur, errdefs.ErrInvalidArgument)
			}
			continue
		}
		if err := os.Mkdir(hp, 0o755); err != nil {
			return "", fmt.Errorf("create %s: %w", cur, err)
		}
		if err := os.Lchown(hp, own.uid, own.gid); err != nil {
			return "", fmt.Errorf("chown %s: %w", cur, err)
		}
	}
	return securejoin.SecureJoin(rootfs, dir)
}

// put copies the source entry abs (described by fi) to target inside rootfs.
func (c *copier) put(rootfs, target, abs string, fi fs.FileInfo) error {
	target = path.Clean(target)
	if target == "/" {
		if fi.IsDir() {
			return nil
		}
		return fmt.Errorf("cannot copy %s over /: %w", abs, errdefs.ErrInvalidArgument)
	}
	pdir, err := c.mkdirAll(rootfs, path.Dir(target))
	if err != nil {
		return err
	}
	host := filepath.Join(pdir, path.Base(target))
	uid, gid := statOwner(fi)
	own := c.ownerFor(uid, gid)
	mode := c.modeFor(fi.Mode())
	existing, lerr := os.Lstat(host)
	exists := lerr == nil
	switch {
	case fi.IsDir():
		if exists && !existing.IsDir() {
			if err := os.Remove(host); err != nil {
				return err
			}
			exists = false
		}
		if !exists {
			if err := os.Mkdir(host, 0o700); err != nil {
				return err
			}
		}
		if err := os.Lchown(host, own.uid, own.gid); err != nil {
			return err
		}
		if err := unix.Chmod(host, unixMode(mode)); err != nil {
			return err
		}
		c.dirTimes = append(c.dirTimes, dirTime{host, fi.ModTime()})
		return nil
	case fi.Mode().IsRegular():
		if exists {
			if err := replaceNonDir(existing, host, target, "a file"); err != nil {
				return err
			}
		}
		f, err := os.Open(abs)
		if err != nil {
			return err
		}
		defer f.Close()
		return c.writeFile(host, f, fi, own, mode, fi.ModTime())
	case fi.Mode()&fs.ModeSymlink != 0:
		if exists {
			if err := replaceNonDir(existing, host, target, "a symlink"); err != nil {
				return err
			}
		}
		link, err := os.Readlink(abs)
		if err != nil {
			return err
		}
		if err := os.Symlink(link, host); err != nil {
			return err
		}
		if err := os.Lchown(host, own.uid, own.gid); err != nil {
			return err
		}
		return setTimes(host, fi.ModTime())
	}
	return nil // sockets, devices and fifos are not copied
}

func (c *copier) writeFile(host string, r io.Reader, fi fs.FileInfo, own owner, mode fs.FileMode, mtime time.Time) error {
	f, err := os.OpenFile(host, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Chown(own.uid, own.gid)
	}
	if err == nil {
		err = unix.Fchmod(int(f.Fd()), unixMode(mode))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", host, err)
	}
	return setTimes(host, mtime)
}

func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= unix.S_ISVTX
	}
	return u
}

func statOwner(fi fs.FileInfo) (int, int) {
	if st, ok := fi.Sys().(*unix.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	if st, ok := fi.Sys().(*tarStat); ok {
		return st.uid, st.gid
	}
	return 0, 0
}

func setTimes(p string, mtime time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// inlineInfo describes a heredoc source as a 0644 file.
type inlineInfo struct {
	name string
	size int64
}

func (i inlineInfo) Name() string       { return i.name }
func (i inlineInfo) Size() int64        { return i.size }
func (i inlineInfo) Mode() fs.FileMode  { return 0o644 }
func (i inlineInfo) ModTime() time.Time { return time.Time{} }
func (i inlineInfo) IsDir() bool        { return false }
func (i inlineInfo) Sys() any           { return nil }

// tarStat carries a tar entry's owner through fs.FileInfo.Sys.
type tarStat struct{ uid, gid int }

// decompress opens an archive stream, gzip, bzip2, zstd or plain.
func decompress(f io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReader(f)
	magic, _ := br.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return zr, func() { zr.Close() }, nil
	case len(magic) >= 3 && string(magic[:3]) == "BZh":
		return bzip2.NewReader(br), func() {}, nil
	case len(magic) == 4 && bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// isArchive says whether p is a tar archive, possibly compressed, that ADD
// extracts.
func isArchive(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	r, closeFn, err := decompress(f)
	if err != nil {
		return false
	}
	defer closeFn()
	_, err = tar.NewReader(r).Next()
	return err == nil
}

// extract unpacks the archive at p into the directory dest of rootfs,
// keeping the entries' owners, modes and times.
func (c *copier) extract(rootfs, p, dest string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	r, closeFn, err := decompress(f)
	if err != nil {
		return fmt.Errorf("extract %s: %w", filepath.Base(p), err)
	}
	defer closeFn()
	if _, err := c.mkdirAll(rootfs, dest); err != nil {
		return err
	}
	saved := c.fromContext
	c.fromContext = false // archive entries keep their owners
	defer func() { c.fromContext = saved }()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("extract %s: %w", filepath.Base(p), err)
		}
		target := path.Join(dest, path.Clean("/"+hdr.Name))
		fi := tarInfo{hdr: hdr}
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeReg, tar.TypeSymlink:
			if err := c.putTar(rootfs, target, hdr, fi, tr); err != nil {
				return err
			}
		case tar.TypeLink:
			pdir, err := c.mkdirAll(rootfs, path.Dir(target))
			if err != nil {
				return err
			}
			old, err := securejoin.SecureJoin(rootfs, path.Join(dest, path.Clean("/"+hdr.Linkname)))
			if err != nil {
				return err
			}
			host := filepath.Join(pdir, path.Base(target))
			_ = os.Remove(host)
			if err := os.Link(old, host); err != nil {
				return fmt.Errorf("extract %s: link %s: %w", filepath.Base(p), hdr.Name, err)
			}
		}
	}
}

func (c *copier) putTar(rootfs, target string, hdr *tar.Header, fi tarInfo, r io.Reader) error {
	if hdr.Typeflag != tar.TypeReg {
		if hdr.Typeflag == tar.TypeSymlink {
			return c.putSymlink(rootfs, target, hdr.Linkname, fi)
		}
		return c.put(rootfs, target, "", fi)
	}
	pdir, err := c.mkdirAll(rootfs, path.Dir(target))
	if err != nil {
		return err
	}
	host := filepath.Join(pdir, path.Base(target))
	if existing, err := os.Lstat(host); err == nil {
		if err := replaceNonDir(existing, host, target, "a file"); err != nil {
			return err
		}
	}
	return c.writeFile(host, r, fi, c.ownerFor(hdr.Uid, hdr.Gid), fi.Mode(), hdr.ModTime)
}

func (c *copier) putSymlink(rootfs, target, link string, fi fs.FileInfo) error {
	pdir, err := c.mkdirAll(rootfs, path.Dir(target))
	if err != nil {
		return err
	}
	host := filepath.Join(pdir, path.Base(target))
	if existing, err := os.Lstat(host); err == nil {
		if err := replaceNonDir(existing, host, target, "a symlink"); err != nil {
			return err
		}
	}
	if err := os.Symlink(link, host); err != nil {
		return err
	}
	uid, gid := statOwner(fi)
	own := c.ownerFor(uid, gid)
	if err := os.Lchown(host, own.uid, own.gid); err != nil {
		return err
	}
	return setTimes(host, fi.ModTime())
}

// tarInfo is a tar header as fs.FileInfo.
type tarInfo struct{ hdr *tar.Header }

func (t tarInfo) Name() string       { return path.Base(t.hdr.Name) }
func (t tarInfo) Size() int64        { return t.hdr.Size }
func (t tarInfo) Mode() fs.FileMode  { return t.hdr.FileInfo().Mode() }
func (t tarInfo) ModTime() time.Time { return t.hdr.ModTime }
func (t tarInfo) IsDir() bool        { return t.hdr.Typeflag == tar.TypeDir }
func (t tarInfo) Sys() any           { return &tarStat{uid: t.hdr.Uid, gid: t.hdr.Gid} }

// parseChmod parses --chmod's octal mode.
func parseChmod(s string) (*fs.FileMode, error) {
	if s == "" {
		return nil, nil
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return nil, fmt.Errorf("--chmod=%s: not an octal mode: %w", s, errdefs.ErrInvalidArgument)
	}
	m := fs.FileMode(n & 0o777)
	if n&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return &m, nil
}

// replaceNonDir clears the way for a new file or symlink (what) at host,
// where existing already stands: a directory is refused, like Docker does,
// anything else is removed.
func replaceNonDir(existing fs.FileInfo, host, target, what string) error {
	if existing.IsDir() {
		return fmt.Errorf("cannot replace directory %s with %s: %w", target, what, errdefs.ErrConflict)
	}
	return os.Remove(host)
}
