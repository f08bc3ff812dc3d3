package progress

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// refreshInterval is how often a terminal display is redrawn.
const refreshInterval = 150 * time.Millisecond

// Writer renders progress events to an io.Writer. It is safe for concurrent
// use. Create it with New and call Close when the operation ends, even on
// failure, so a terminal display gets its final redraw.
type Writer struct {
	w        io.Writer
	terminal bool

	mu      sync.Mutex
	items   []*item
	byID    map[string]*item
	drawn   int // lines drawn by the last terminal redraw
	start   time.Time
	closed  bool
	stop    chan struct{}
	stopped chan struct{}
}

type item struct {
	id      string
	total   int64
	current int64
	status  string
	done    bool
	started time.Time
	ended   time.Time
}

// New returns a Writer printing to w. When isTerminal is true it redraws one
// line per item and a total line in place using ANSI escapes; otherwise it
// prints one plain line per item as it finishes.
func New(w io.Writer, isTerminal bool) *Writer {
	p := &Writer{
		w:        w,
		terminal: isTerminal,
		byID:     make(map[string]*item),
		start:    time.Now(),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	if isTerminal {
		go p.loop()
	} else {
		close(p.stopped)
	}
	return p
}

// Discard is a progress sink that prints nothing (quiet mode).
var Discard discard

type discard struct{}

// Start implements the sink interface and does nothing.
func (discard) Start(string, int64) {}

// Add implements the sink interface and does nothing.
func (discard) Add(string, int64) {}

// Done implements the sink interface and does nothing.
func (discard) Done(string, string) {}

// Start announces an item of total bytes (0 or less when unknown). Starting
// an id again resets it (a retried transfer).
func (p *Writer) Start(id string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	it, ok := p.byID[id]
	if !ok {
		it = &item{id: id}
		p.byID[id] = it
		p.items = append(p.items, it)
	}
	it.total, it.current, it.done, it.status = total, 0, false, "Waiting"
	it.started = time.Now()
}

// Add records n more bytes transferred for id.
func (p *Writer) Add(id string, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if it, ok := p.byID[id]; ok {
		it.current += n
		it.status = ""
	}
}

// Done marks id finished with a short status such as "Pull complete" or
// "Already exists". Without a terminal it prints the item's line now.
func (p *Writer) Done(id, status string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	it, ok := p.byID[id]
	if !ok {
		it = &item{id: id, started: time.Now()}
		p.byID[id] = it
		p.items = append(p.items, it)
	}
	it.done, it.status, it.ended = true, status, time.Now()
	if !p.terminal && !p.closed {
		fmt.Fprintln(p.w, p.line(it))
	}
}

// Close stops redrawing and prints the final state. It is idempotent.
func (p *Writer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	if p.terminal {
		close(p.stop)
		<-p.stopped
		p.mu.Lock()
		p.redraw(true)
		p.mu.Unlock()
	}
	return nil
}

func (p *Writer) loop() {
	defer close(p.stopped)
	t := time.NewTicker(refreshInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.redraw(false)
			p.mu.Unlock()
		}
	}
}

// redraw moves the cursor up over the previous drawing and rewrites every
// line. Called with p.mu held.
func (p *Writer) redraw(final bool) {
	if len(p.items) == 0 {
		return
	}
	var b []byte
	if p.drawn > 0 {
		b = fmt.Appendf(b, "\x1b[%dA", p.drawn)
	}
	var cur, total int64
	for _, it := range p.items {
		b = fmt.Appendf(b, "\x1b[2K%s\n", p.line(it))
		cur += it.current
		if it.total > 0 {
			total += it.total
		}
	}
	elapsed := time.Since(p.start)
	b = fmt.Appendf(b, "\x1b[2K%s\n", totalLine(cur, total, elapsed, final))
	p.drawn = len(p.items) + 1
	_, _ = p.w.Write(b)
}

func totalLine(cur, total int64, elapsed time.Duration, final bool) string {
	s := "Total: " + Size(cur)
	if total > 0 && !final {
		s += "/" + Size(total)
	}
	s += "  " + Rate(cur, elapsed)
	if final {
		s += fmt.Sprintf(" in %.1fs", elapsed.Seconds())
	}
	return s
}

// line renders one item. Called with p.mu held.
func (p *Writer) line(it *item) string {
	id := it.id
	if it.done {
		if it.current > 0 {
			return fmt.Sprintf("%s: %s (%s, %s)", id, it.status, Size(it.current), Rate(it.current, it.ended.Sub(it.started)))
		}
		return fmt.Sprintf("%s: %s", id, it.status)
	}
	if it.status != "" {
		return fmt.Sprintf("%s: %s", id, it.status)
	}
	s := fmt.Sprintf("%s: %s", id, Size(it.current))
	if it.total > 0 {
		s += "/" + Size(it.total)
	}
	return s + "  " + Rate(it.current, time.Since(it.started))
}

// Size formats n bytes in decimal units as Docker does (kB, MB, GB).
func Size(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	f := float64(n)
	for _, u := range []string{"kB", "MB", "GB", "TB"} {
		f /= unit
		if f < unit {
			return fmt.Sprintf("%.1f%s", f, u)
		}
	}
	return fmt.Sprintf("%.1fPB", f/unit)
}

// Rate formats n bytes over d as a per-second rate.
func Rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-/s"
	}
	return Size(int64(float64(n)/d.Seconds())) + "/s"
}
