// Package attach is the wire protocol between a berth CLI and a workload's
// monitor: one JSON request line, one JSON reply line, then (for attach, exec
// and wait) a stream of frames in both directions.
//
// A frame is a 1-byte type, a 4-byte big-endian payload length and the
// payload. Stdin, StdinClose, Resize and Signal go from client to monitor;
// Stdout, Stderr and Exit go from monitor to client. Exit ends the stream.
package attach

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// FrameType says what a frame carries.
type FrameType byte

// The frame types.
const (
	Stdin FrameType = iota
	Stdout
	Stderr
	StdinClose
	Resize // payload: width, height as two big-endian uint16
	Signal // payload: signal number, big-endian uint32
	Exit   // payload: JSON ExitMessage
)

// maxFrame bounds a frame's payload so a corrupt stream cannot make us
// allocate without limit.
const maxFrame = 1 << 20

// Op names a request.
type Op string

// The requests a monitor serves.
const (
	OpAttach Op = "attach" // stream the init process's output (and stdin)
	OpExec   Op = "exec"   // run Process in the workload and stream it
	OpKill   Op = "kill"   // signal the init process
	OpWait   Op = "wait"   // reply with an Exit frame when init ends
)

// Request is the first line a client sends.
type Request struct {
	Op      Op             `json:"op"`
	Stdin   bool           `json:"stdin,omitempty"`
	Signal  int            `json:"signal,omitempty"`
	Process *specs.Process `json:"process,omitempty"`
	Width   uint16         `json:"width,omitempty"`
	Height  uint16         `json:"height,omitempty"`
}

// Reply is the monitor's answer line.
type Reply struct {
	Error string `json:"error,omitempty"`
	// Code is the exit status a CLI should end with when Error is set
	// (Docker's 126/127 for commands that cannot run); 0 if unspecified.
	Code int `json:"code,omitempty"`
	Pid  int `json:"pid,omitempty"`
}

// ExitMessage is the payload of an Exit frame.
type ExitMessage struct {
	Code   int    `json:"code"`
	Signal int    `json:"signal,omitempty"`
	Error  string `json:"error,omitempty"`
}

// WriteFrame writes one frame; safe to call from one goroutine at a time per
// writer (wrap with a FrameWriter for concurrent use).
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	var hdr [5]byte
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if len(payload) == 0 {
		return nil
	}
	_, err := w.Write(payload)
	return err
}

// ReadFrame reads one frame.
func ReadFrame(r io.Reader) (FrameType, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("attach: frame of %d bytes exceeds the %d limit", n, maxFrame)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	return FrameType(hdr[0]), buf, nil
}

// FrameWriter serialises frames from several goroutines onto one stream.
type FrameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewFrameWriter wraps w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// Write sends one frame.
func (f *FrameWriter) Write(t FrameType, payload []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return WriteFrame(f.w, t, payload)
}

// Stream returns an io.Writer whose writes become frames of type t.
func (f *FrameWriter) Stream(t FrameType) io.Writer { return streamWriter{f, t} }

type streamWriter struct {
	f *FrameWriter
	t FrameType
}

func (s streamWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += maxFrame {
		end := min(off+maxFrame, len(p))
		if err := s.f.Write(s.t, p[off:end]); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

// WriteJSONLine sends v as one JSON line.
func WriteJSONLine(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

// ReadJSONLine reads one JSON line into v, byte by byte so that nothing past
// the newline is consumed from r (frames follow it).
func ReadJSONLine(r io.Reader, v any) error {
	var line []byte
	var b [1]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if errors.Is(err, io.EOF) && len(line) == 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
		if len(line) > maxFrame {
			return errors.New("attach: request line too long")
		}
	}
	return json.Unmarshal(line, v)
}
