package overlay

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const opaqueXattr = "trusted.overlay.opaque"

// Diff writes the overlay upper dir upperDir as an uncompressed OCI layer tar
// to w: whiteouts (0:0 char devices) become .wh.NAME entries, opaque dirs
// (trusted.overlay.opaque=y) get a .wh..wh..opq entry, hardlinks within the
// upper dir become tar hardlinks. Entries are in lexical order; the upper
// dir itself is not an entry. The caller unmounts (or freezes) the snapshot
// first so the upper dir does not change underneath.
func Diff(ctx context.Context, upperDir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	inodes := map[[2]uint64]string{} // (dev, ino) → first name, for hardlinks
	err := filepath.WalkDir(upperDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == upperDir {
			return nil
		}
		rel, err := filepath.Rel(upperDir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		return diffEntry(tw, p, rel, inodes)
	})
	if err != nil {
		return fmt.Errorf("diff %s: %w", upperDir, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("diff %s: %w", upperDir, err)
	}
	return nil
}

func diffEntry(tw *tar.Writer, p, rel string, inodes map[[2]uint64]string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no stat data", rel)
	}
	// A whiteout: char device 0:0.
	if fi.Mode()&os.ModeCharDevice != 0 && fi.Mode()&os.ModeDevice != 0 && st.Rdev == 0 {
		return tw.WriteHeader(&tar.Header{
			Name:     path.Join(path.Dir(rel), ".wh."+path.Base(rel)),
			Typeflag: tar.TypeReg,
			Mode:     0o600,
			Uid:      int(st.Uid),
			Gid:      int(st.Gid),
			ModTime:  fi.ModTime(),
			Format:   tar.FormatPAX,
		})
	}
	link := ""
	if fi.Mode()&os.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	hdr.Name = rel
	hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
	hdr.Uname, hdr.Gname = "", ""
	hdr.Format = tar.FormatPAX
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	if fi.IsDir() {
		hdr.Name += "/"
	}
	if fi.Mode().IsRegular() && st.Nlink > 1 {
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := inodes[key]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
		} else {
			inodes[key] = rel
		}
	}
	opaque := false
	if fi.Mode()&os.ModeSymlink == 0 {
		xs, err := listXattrs(p)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		for k, v := range xs {
			if strings.HasPrefix(k, "trusted.overlay.") {
				opaque = opaque || (k == opaqueXattr && v == "y" && fi.IsDir())
				continue
			}
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.CopyN(tw, f, hdr.Size)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
	}
	if opaque {
		return tw.WriteHeader(&tar.Header{
			Name:     path.Join(rel, ".wh..wh..opq"),
			Typeflag: tar.TypeReg,
			Mode:     0o600,
			ModTime:  fi.ModTime(),
			Format:   tar.FormatPAX,
		})
	}
	return nil
}

// listXattrs returns the extended attributes of p (not following symlinks).
func listXattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		return nil, err
	}
	if size == 0 {
		return nil, nil
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(p, buf); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, k := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if k == "" {
			continue
		}
		n, err := unix.Lgetxattr(p, k, nil)
		if err != nil {
			continue
		}
		v := make([]byte, n)
		if n, err = unix.Lgetxattr(p, k, v); err != nil {
			continue
		}
		out[k] = string(v[:n])
	}
	return out, nil
}
