package registry_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/berthdev/berth/internal/progress"
	"github.com/berthdev/berth/internal/registry"
)

// recorder is a registry.Progress that remembers final statuses.
type recorder struct {
	mu    sync.Mutex
	done  map[string]string
	bytes map[string]int64
}

func newRecorder() *recorder {
	return &recorder{done: map[string]string{}, bytes: map[string]int64{}}
}

func (r *recorder) Start(id string, _ int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bytes[id] = 0
}

func (r *recorder) Add(id string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bytes[id] += n
}

func (r *recorder) Done(id, status string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done[id] = status
}

func (r *recorder) statuses() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string]int{}
	for _, s := range r.done {
		m[s]++
	}
	return m
}

func TestPushSkipsExistingAndMounts(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t, regOpts{})
	img := randomImage(t, 3)

	rec := newRecorder()
	if _, err := registry.Push(ctx, reg.ref("test/a:1"), img, registry.WithProgress(rec)); err != nil {
		t.Fatal(err)
	}
	if s := rec.statuses(); s["Pushed"] != 3 {
		t.Fatalf("first push statuses %v", s)
	}

	// Same repository again: every blob exists, nothing is uploaded.
	reg.reset()
	rec = newRecorder()
	if _, err := registry.Push(ctx, reg.ref("test/a:2"), img, registry.WithProgress(rec)); err != nil {
		t.Fatal(err)
	}
	if n := reg.count("PATCH", "/blobs/uploads/") + reg.count("POST", "/blobs/uploads/"); n != 0 {
		t.Fatalf("second push uploaded: %v", reg.requests())
	}
	if s := rec.statuses(); s["Layer already exists"] != 3 {
		t.Fatalf("second push statuses %v", s)
	}

	// Another repository on the same registry: blobs are mounted.
	reg.reset()
	if _, err := registry.Push(ctx, reg.ref("test/b:1"), img, registry.WithMountFrom(reg.ref("test/a"))); err != nil {
		t.Fatal(err)
	}
	if n := reg.count("PATCH", "/blobs/uploads/"); n != 0 {
		t.Fatalf("push with mount uploaded data: %v", reg.requests())
	}
	if n := reg.count("POST", "/v2/test/b/blobs/uploads/"); n != 4 { // 3 layers + config
		t.Fatalf("want 4 mount requests, got %v", reg.requests())
	}
	if _, err := registry.Pull(ctx, reg.ref("test/b:1"), newLayoutStore(t)); err != nil {
		t.Fatalf("pull mounted image: %v", err)
	}
}

func TestPullProgressOutput(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t, regOpts{})
	img := randomImage(t, 2)
	ref := reg.ref("test/progress:1")
	reg.push(ref, img)

	var plain bytes.Buffer
	pw := progress.New(&plain, false)
	if _, err := registry.Pull(ctx, ref, newLayoutStore(t), registry.WithProgress(pw)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	lines := strings.Split(strings.TrimSpace(plain.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "Download complete") || strings.Contains(plain.String(), "\x1b[") {
		t.Fatalf("plain progress:\n%s", plain.String())
	}

	var term bytes.Buffer
	tw := progress.New(&term, true)
	if _, err := registry.Pull(ctx, ref, newLayoutStore(t), registry.WithProgress(tw)); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	if out := term.String(); !strings.Contains(out, "\x1b[2K") || !strings.Contains(out, "Total: ") {
		t.Fatalf("terminal progress: %q", out)
	}
}
