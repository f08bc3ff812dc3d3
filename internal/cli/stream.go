package cli

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/berthdev/berth/internal/attach"
	"golang.org/x/term"
)

// stream connects the terminal to an attach or exec connection until the
// process exits, and returns its exit code. With stdin it copies standard
// input (closing the process's stdin at EOF); with tty it puts a terminal in
// raw mode and forwards window size changes; without tty it forwards
// SIGINT and SIGTERM to the process.
func stream(conn net.Conn, stdin, tty bool) (int, error) {
	fw := attach.NewFrameWriter(conn)
	inFd := int(os.Stdin.Fd())
	if tty && term.IsTerminal(inFd) {
		if old, err := term.MakeRaw(inFd); err == nil {
			defer term.Restore(inFd, old)
		}
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		sendSize := func() {
			if w, h, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
				var b [4]byte
				binary.BigEndian.PutUint16(b[:], uint16(w))
				binary.BigEndian.PutUint16(b[2:], uint16(h))
				_ = fw.Write(attach.Resize, b[:])
			}
		}
		sendSize()
		go func() {
			for range winch {
				sendSize()
			}
		}()
	} else {
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
		defer signal.Stop(sigs)
		go func() {
			for s := range sigs {
				var b [4]byte
				binary.BigEndian.PutUint32(b[:], uint32(s.(syscall.Signal)))
				_ = fw.Write(attach.Signal, b[:])
			}
		}()
	}
	if stdin {
		go func() {
			_, _ = io.Copy(fw.Stream(attach.Stdin), os.Stdin)
			_ = fw.Write(attach.StdinClose, nil)
		}()
	}
	for {
		t, payload, err := attach.ReadFrame(conn)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return 0, errors.New("lost the connection to the workload's monitor before it reported an exit status")
			}
			return 0, err
		}
		switch t {
		case attach.Stdout:
			_, _ = os.Stdout.Write(payload)
		case attach.Stderr:
			_, _ = os.Stderr.Write(payload)
		case attach.Exit:
			var m attach.ExitMessage
			if err := json.Unmarshal(payload, &m); err != nil {
				return 0, fmt.Errorf("bad exit message from monitor: %w", err)
			}
			if m.Error != "" {
				return m.Code, errors.New(m.Error)
			}
			return m.Code, nil
		}
	}
}

// termSize returns the size of the terminal on stdout, zero if none.
func termSize() (uint16, uint16) {
	if w, h, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
		return uint16(w), uint16(h)
	}
	return 0, 0
}
