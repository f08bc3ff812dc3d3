// Package qmp is a minimal client for QEMU's machine protocol (QMP): the
// capabilities handshake, then synchronous commands. berth dials it on demand
// (a QMP socket serves one client at a time) to query and quit VMs.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Client is a connected QMP session; it is not safe for concurrent use.
type Client struct {
	conn net.Conn
	r    *bufio.Reader
}

// Error is an error QEMU returned for a command.
type Error struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// Dial connects to the QMP socket at path and negotiates capabilities.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("dial qmp %s: %w", path, err)
	}
	c := &Client{conn: conn, r: bufio.NewReader(conn)}
	c.deadline(ctx)
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if err := c.read(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: read greeting: %v", path, err)
	}
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) deadline(ctx context.Context) {
	if d, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(d)
	} else {
		_ = c.conn.SetDeadline(time.Time{})
	}
}

func (c *Client) read(v any) error {
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

// Execute runs command with args (nil for none) and decodes its return
// value into out (nil to discard). Events arriving meanwhile are skipped.
func (c *Client) Execute(ctx context.Context, command string, args, out any) error {
	c.deadline(ctx)
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *Error          `json:"error"`
			Event  string          `json:"event"`
		}
		if err := c.read(&resp); err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			resp.Error.Command = command
			return resp.Error
		}
		if out != nil && resp.Return != nil {
			if err := json.Unmarshal(resp.Return, out); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", command, err)
			}
		}
		return nil
	}
}

// Status returns the VM's run state (running, paused, shutdown…).
func (c *Client) Status(ctx context.Context) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil {
		return "", err
	}
	return st.Status, nil
}

// Quit makes QEMU exit; the connection ends with it.
func (c *Client) Quit(ctx context.Context) error {
	err := c.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// Close ends the session.
func (c *Client) Close() error { return c.conn.Close() }
