package initramfs

import (
	"bytes"
	"io/fs"
	"os/exec"
	"strings"
	"testing"
)

func TestWriterNewc(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, e := range []Entry{
		{Name: "dir", Mode: fs.ModeDir | 0o755},
		{Name: "dir/file", Mode: 0o644, Data: []byte("hello")},
		{Name: "console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Rdev: [2]uint32{5, 1}},
	} {
		if err := w.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if len(b)%4 != 0 {
		t.Fatalf("archive size %d not 4-aligned", len(b))
	}
	// First header: magic, then mode of a directory.
	if got := string(b[:6]); got != "070701" {
		t.Fatalf("magic = %q", got)
	}
	if got := string(b[14:22]); got != "000041ED" {
		t.Fatalf("dir mode = %q, want 000041ED", got)
	}
	if !bytes.Contains(b, []byte("dir/file\x00")) || !bytes.Contains(b, []byte("hello")) || !bytes.Contains(b, []byte("TRAILER!!!\x00")) {
		t.Fatal("archive lacks a name, data or the trailer")
	}
	// Cross-check with bsdtar or busybox cpio when available.
	for _, tool := range [][]string{{"busybox", "cpio", "-t"}, {"bsdtar", "-tf", "-"}} {
		if _, err := exec.LookPath(tool[0]); err != nil {
			continue
		}
		cmd := exec.Command(tool[0], tool[1:]...)
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", tool[0], err, out)
		}
		if !strings.Contains(string(out), "dir/file") || !strings.Contains(string(out), "console") {
			t.Fatalf("%s lists:\n%s", tool[0], out)
		}
		return
	}
}
