package guest

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

func TestMountArgs(t *testing.T) {
	tests := []struct {
		name  string
		m     agentproto.Mount
		typ   string
		flags uintptr
		data  string
		err   bool
	}{
		{"tmpfs", agentproto.Mount{Type: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755", "size=65536k", "rprivate"}},
			"tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=755,size=65536k", false},
		{"ro then rw", agentproto.Mount{Type: "proc", Options: []string{"ro", "rw", "noexec"}}, "proc", unix.MS_NOEXEC, "", false},
		{"cgroup v1 becomes v2", agentproto.Mount{Type: "cgroup", Options: []string{"ro"}}, "cgroup2", unix.MS_RDONLY, "", false},
		{"bind refused", agentproto.Mount{Type: "none", Options: []string{"rbind", "ro"}}, "", 0, "", true},
		{"bind type refused", agentproto.Mount{Type: "bind"}, "", 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, flags, data, err := mountArgs(tt.m)
			if (err != nil) != tt.err || typ != tt.typ || flags != tt.flags || data != tt.data {
				t.Fatalf("mountArgs = %q %#x %q %v", typ, flags, data, err)
			}
		})
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "data"), nil, 0o644)
	if got, err := lookPath("tool", []string{"PATH=/nonexistent:" + dir}); err != nil || got != exe {
		t.Errorf("lookPath(tool) = %q, %v", got, err)
	}
	if _, err := lookPath("data", []string{"PATH=" + dir}); err == nil {
		t.Error("found a non-executable file")
	}
	if got, _ := lookPath("./rel/x", nil); got != "./rel/x" {
		t.Errorf("a path with a slash was searched: %q", got)
	}
	if _, err := lookPath("sh", nil); err != nil {
		t.Errorf("default PATH: %v", err)
	}
}

type closeRecorder struct {
	bytes.Buffer
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestQueue(t *testing.T) {
	q := newQueue()
	var w closeRecorder
	done := make(chan struct{})
	go func() { q.drainTo(&w, 1); close(done) }()
	for _, s := range []string{"a", "b", "c"} {
		q.push([]byte(s))
	}
	q.close()
	q.push([]byte("late"))
	<-done
	if w.String() != "abc" || !w.closed {
		t.Fatalf("drained %q, closed %v", w.String(), w.closed)
	}
}

func TestQueueBrokenWriter(t *testing.T) {
	q := newQueue()
	r, w := io.Pipe()
	r.Close()
	q.push([]byte(strings.Repeat("x", 10)))
	q.close()
	q.drainTo(w, 1) // must not block or panic on a closed reader
}
