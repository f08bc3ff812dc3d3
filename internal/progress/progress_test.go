package progress_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthdev/berth/internal/progress"
)

// syncBuffer is a bytes.Buffer safe for the redraw goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPlainOneLinePerItem(t *testing.T) {
	var buf syncBuffer
	p := progress.New(&buf, false)
	p.Start("aaa", 2000)
	p.Add("aaa", 2000)
	p.Start("bbb", 10)
	p.Done("bbb", "Already exists")
	p.Done("aaa", "Download complete")
	p.Close()
	p.Close()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || lines[0] != "bbb: Already exists" || !strings.HasPrefix(lines[1], "aaa: Download complete (2.0kB, ") {
		t.Fatalf("output:\n%s", buf.String())
	}
}

func TestTerminalRedrawsInPlace(t *testing.T) {
	var buf syncBuffer
	p := progress.New(&buf, true)
	p.Start("aaa", 5_000_000)
	p.Add("aaa", 1_000_000)
	p.Start("bbb", 3)
	time.Sleep(400 * time.Millisecond) // at least one live redraw
	live := buf.String()
	if !strings.Contains(live, "aaa: 1.0MB/5.0MB") || !strings.Contains(live, "Total: 1.0MB/5.0MB") {
		t.Fatalf("live output: %q", live)
	}
	p.Add("aaa", 4_000_000)
	p.Done("aaa", "Pull complete")
	p.Done("bbb", "Already exists")
	p.Close()
	out := buf.String()
	if !strings.Contains(out, "\x1b[3A") { // moved up over 2 items + total
		t.Fatalf("no cursor movement: %q", out)
	}
	last := out[strings.LastIndex(out, "\x1b[3A"):]
	if !strings.Contains(last, "aaa: Pull complete (5.0MB") || !strings.Contains(last, "bbb: Already exists") || !strings.Contains(last, "Total: 5.0MB") {
		t.Fatalf("final drawing: %q", last)
	}
}

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 999: "999B", 1000: "1.0kB", 1_500_000: "1.5MB", 2_000_000_000: "2.0GB"} {
		if got := progress.Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}
