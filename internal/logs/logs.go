// Package logs writes and reads a workload's output log in Docker's json-file
// format: one JSON object per line with the text, the stream it came from and
// a timestamp.
package logs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Entry is one line of the log.
type Entry struct {
	Log    string    `json:"log"`
	Stream string    `json:"stream"`
	Time   time.Time `json:"time"`
}

// maxLine is the longest partial line buffered before it is written out.
const maxLine = 16 * 1024

// Writer appends entries to a log file. It is safe for concurrent use by the
// stdout and stderr copiers.
type Writer struct {
	mu  sync.Mutex
	f   *os.File
	enc *json.Encoder
}

// Create opens (appending) the log file at path.
func Create(path string) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	return &Writer{f: f, enc: json.NewEncoder(f)}, nil
}

// Stream returns an io.WriteCloser that logs what is written to it as stream
// name ("stdout" or "stderr"), one entry per line. Close flushes a trailing
// partial line.
func (w *Writer) Stream(name string) io.WriteCloser {
	return &lineWriter{w: w, stream: name}
}

func (w *Writer) write(stream string, line []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc.Encode(Entry{Log: string(line), Stream: stream, Time: time.Now().UTC()})
}

// Close closes the file.
func (w *Writer) Close() error { return w.f.Close() }

type lineWriter struct {
	w      *Writer
	stream string
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		if err := l.w.write(l.stream, l.buf[:i+1]); err != nil {
			return 0, err
		}
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) >= maxLine {
		if err := l.w.write(l.stream, l.buf); err != nil {
			return 0, err
		}
		l.buf = nil
	}
	return len(p), nil
}

func (l *lineWriter) Close() error {
	if len(l.buf) == 0 {
		return nil
	}
	err := l.w.write(l.stream, l.buf)
	l.buf = nil
	return err
}

// ReadOptions select what Read prints.
type ReadOptions struct {
	// Tail keeps only the last Tail entries; negative means all.
	Tail int
	// Timestamps prefixes each line with its RFC 3339 time.
	Timestamps bool
	// Follow keeps reading as the file grows until Done reports true.
	Follow bool
	// Done is polled while following; when it returns true the rest of the
	// file is read and Read returns.
	Done func() bool
}

// Read copies the log at path to stdout and stderr by stream.
func Read(ctx context.Context, path string, stdout, stderr io.Writer, opts ReadOptions) error {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("open log %s: %w", path, err)
	}
	defer f.Close()
	emit := func(e Entry) error {
		out := stdout
		if e.Stream == "stderr" {
			out = stderr
		}
		if opts.Timestamps {
			if _, err := fmt.Fprintf(out, "%s ", e.Time.Format(time.RFC3339Nano)); err != nil {
				return err
			}
		}
		_, err := io.WriteString(out, e.Log)
		return err
	}
	r := bufio.NewReader(f)
	var tail []Entry
	var pending []byte
	readAvailable := func(collect bool) error {
		for {
			line, err := r.ReadBytes('\n')
			pending = append(pending, line...)
			if err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
			var e Entry
			if jerr := json.Unmarshal(pending, &e); jerr != nil {
				pending = nil
				continue // a torn line from a killed writer: skip it
			}
			pending = nil
			if collect {
				tail = append(tail, e)
				if opts.Tail >= 0 && len(tail) > opts.Tail {
					tail = tail[1:]
				}
				continue
			}
			if err := emit(e); err != nil {
				return err
			}
		}
	}
	if err := readAvailable(true); err != nil {
		return err
	}
	for _, e := range tail {
		if err := emit(e); err != nil {
			return err
		}
	}
	if !opts.Follow {
		return nil
	}
	for {
		done := opts.Done == nil || opts.Done()
		if err := readAvailable(false); err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}
