package agentproto

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// Type says what a frame carries.
type Type uint8

// Frame types. Host→guest and guest→host types share one space so a frame is
// unambiguous in a capture.
const (
	// TypeSetup (host→guest, id 0, JSON Setup) prepares the guest: mounts the
	// root, sets the hostname. The agent answers TypeReady or TypeError.
	TypeSetup Type = 1
	// TypeReady (guest→host, id 0, JSON Ready): the guest can run processes.
	TypeReady Type = 2
	// TypeStart (host→guest, JSON Process) runs a process under the frame's id.
	TypeStart Type = 3
	// TypeStarted (guest→host, JSON Started): the process runs.
	TypeStarted Type = 4
	// TypeError (guest→host, JSON Error): Setup or Start of the frame's id failed.
	TypeError Type = 5
	// TypeStdin (host→guest, raw) is data for the process's stdin.
	TypeStdin Type = 6
	// TypeStdinClose (host→guest, empty) closes the process's stdin.
	TypeStdinClose Type = 7
	// TypeStdout (guest→host, raw) is output (all output with a terminal).
	TypeStdout Type = 8
	// TypeStderr (guest→host, raw) is standard error output.
	TypeStderr Type = 9
	// TypeSignal (host→guest, JSON Signal) signals the process.
	TypeSignal Type = 10
	// TypeResize (host→guest, JSON Resize) resizes the process's terminal.
	TypeResize Type = 11
	// TypeExit (guest→host, JSON Exit): the process ended, output drained.
	TypeExit Type = 12
	// TypeExitAck (host→guest, empty): the host recorded the Exit.
	TypeExitAck Type = 13
)

var typeNames = map[Type]string{
	TypeSetup: "setup", TypeReady: "ready", TypeStart: "start", TypeStarted: "started",
	TypeError: "error", TypeStdin: "stdin", TypeStdinClose: "stdin-close",
	TypeStdout: "stdout", TypeStderr: "stderr", TypeSignal: "signal",
	TypeResize: "resize", TypeExit: "exit", TypeExitAck: "exit-ack",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// InitID is the id of the workload's init process.
const InitID uint32 = 1

// MaxPayload bounds a frame's payload; stream data is split to fit.
const MaxPayload = 1 << 20

// HeaderSize is the size of a frame header.
const HeaderSize = 9

// Frame is one message.
type Frame struct {
	Type    Type
	ID      uint32
	Payload []byte
}

// ReadFrame reads one frame from r.
func ReadFrame(r io.Reader) (Frame, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	f := Frame{Type: Type(h[0]), ID: binary.BigEndian.Uint32(h[1:5])}
	n := binary.BigEndian.Uint32(h[5:9])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("read %s frame for %d: payload of %d bytes exceeds %d", f.Type, f.ID, n, MaxPayload)
	}
	if n > 0 {
		f.Payload = make([]byte, n)
		if _, err := io.ReadFull(r, f.Payload); err != nil {
			return Frame{}, fmt.Errorf("read %s frame for %d: %w", f.Type, f.ID, noEOF(err))
		}
	}
	return f, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Decode unmarshals the frame's JSON payload into v.
func (f Frame) Decode(v any) error {
	if err := json.Unmarshal(f.Payload, v); err != nil {
		return fmt.Errorf("decode %s frame for %d: %w", f.Type, f.ID, err)
	}
	return nil
}

// Writer writes whole frames to an underlying writer; it is safe for
// concurrent use.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriter returns a Writer that writes frames to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Reset makes later frames go to w (after the guest reopened its port).
func (w *Writer) Reset(to io.Writer) {
	w.mu.Lock()
	w.w = to
	w.mu.Unlock()
}

// Write sends one frame with a raw payload, splitting it into frames of at
// most MaxPayload bytes. An empty payload sends one empty frame.
func (w *Writer) Write(t Type, id uint32, payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		chunk := payload
		if len(chunk) > MaxPayload {
			chunk = chunk[:MaxPayload]
		}
		buf := make([]byte, HeaderSize+len(chunk))
		buf[0] = byte(t)
		binary.BigEndian.PutUint32(buf[1:5], id)
		binary.BigEndian.PutUint32(buf[5:9], uint32(len(chunk)))
		copy(buf[HeaderSize:], chunk)
		if _, err := w.w.Write(buf); err != nil {
			return fmt.Errorf("write %s frame for %d: %w", t, id, err)
		}
		payload = payload[len(chunk):]
		if len(payload) == 0 {
			return nil
		}
	}
}

// WriteJSON sends one frame whose payload is v as JSON.
func (w *Writer) WriteJSON(t Type, id uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s frame for %d: %w", t, id, err)
	}
	return w.Write(t, id, b)
}

// StreamWriter returns an io.Writer that sends what is written to it as
// frames of type t for process id.
func (w *Writer) StreamWriter(t Type, id uint32) io.Writer {
	return streamWriter{w: w, t: t, id: id}
}

type streamWriter struct {
	w  *Writer
	t  Type
	id uint32
}

func (s streamWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.w.Write(s.t, s.id, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
