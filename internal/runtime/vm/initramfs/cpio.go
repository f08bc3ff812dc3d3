package initramfs

import (
	"fmt"
	"io"
	"io/fs"
)

// Entry is one file in a newc archive.
type Entry struct {
	Name  string // path without a leading slash
	Mode  fs.FileMode
	Rdev  [2]uint32 // major, minor for device nodes
	Data  []byte
	Mtime int64
}

// Writer writes a newc ("070701") cpio archive.
type Writer struct {
	w   io.Writer
	n   int64
	ino uint32
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, ino: 1} }

func unixMode(m fs.FileMode) uint32 {
	perm := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		perm |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	switch {
	case m.IsDir():
		return perm | 0o040000
	case m&fs.ModeCharDevice != 0:
		return perm | 0o020000
	case m&fs.ModeDevice != 0:
		return perm | 0o060000
	case m&fs.ModeSymlink != 0:
		return perm | 0o120000
	default:
		return perm | 0o100000
	}
}

func (w *Writer) write(b []byte) error {
	n, err := w.w.Write(b)
	w.n += int64(n)
	return err
}

func (w *Writer) pad() error {
	if r := w.n % 4; r != 0 {
		return w.write(make([]byte, 4-r))
	}
	return nil
}

// Add writes one entry.
func (w *Writer) Add(e Entry) error {
	nlink := 1
	if e.Mode.IsDir() {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, unixMode(e.Mode), 0, 0, nlink, uint32(e.Mtime), len(e.Data),
		0, 0, e.Rdev[0], e.Rdev[1], len(e.Name)+1, 0)
	w.ino++
	if err := w.write([]byte(hdr)); err != nil {
		return err
	}
	if err := w.write(append([]byte(e.Name), 0)); err != nil {
		return err
	}
	if err := w.pad(); err != nil {
		return err
	}
	if err := w.write(e.Data); err != nil {
		return err
	}
	return w.pad()
}

// Close writes the trailer; it does not close the underlying writer.
func (w *Writer) Close() error {
	w.ino = 0
	return w.Add(Entry{Name: "TRAILER!!!"})
}
