package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// fakeQEMU answers QMP like QEMU does, with an event thrown in.
func fakeQEMU(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.Write([]byte(`{"QMP": {"version": {}, "capabilities": []}}` + "\n"))
		r := bufio.NewScanner(conn)
		for r.Scan() {
			var req struct{ Execute string }
			json.Unmarshal(r.Bytes(), &req)
			switch req.Execute {
			case "qmp_capabilities":
				conn.Write([]byte(`{"return": {}}` + "\n"))
			case "query-status":
				conn.Write([]byte(`{"event": "RESUME", "data": {}}` + "\n" + `{"return": {"status": "running", "running": true}}` + "\n"))
			case "quit":
				conn.Write([]byte(`{"return": {}}` + "\n"))
				return
			default:
				conn.Write([]byte(`{"error": {"class": "CommandNotFound", "desc": "no such command"}}` + "\n"))
			}
		}
	}()
	return path
}

func TestClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, fakeQEMU(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if st, err := c.Status(ctx); err != nil || st != "running" {
		t.Fatalf("Status = %q, %v", st, err)
	}
	var qe *Error
	if err := c.Execute(ctx, "bogus", nil, nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("bogus command: %v", err)
	}
	if err := c.Quit(ctx); err != nil {
		t.Fatal(err)
	}
}
