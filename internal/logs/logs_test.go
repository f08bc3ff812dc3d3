package logs

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReadTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctr.log")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	out, errw := w.Stream("stdout"), w.Stream("stderr")
	_, _ = out.Write([]byte("one\ntw"))
	_, _ = errw.Write([]byte("oops\n"))
	_, _ = out.Write([]byte("o\nthree"))
	_ = out.Close()
	_ = w.Close()

	var so, se bytes.Buffer
	if err := Read(context.Background(), path, &so, &se, ReadOptions{Tail: -1}); err != nil {
		t.Fatal(err)
	}
	if so.String() != "one\ntwo\nthree" || se.String() != "oops\n" {
		t.Fatalf("stdout %q stderr %q", so.String(), se.String())
	}
	so.Reset()
	se.Reset()
	_ = Read(context.Background(), path, &so, &se, ReadOptions{Tail: 1, Timestamps: true})
	if !strings.HasSuffix(so.String(), " three") || !strings.HasPrefix(so.String(), "20") {
		t.Fatalf("tail 1 with timestamps = %q", so.String())
	}
}
