package attach

import (
	"bytes"
	"strings"
	"testing"
)

func TestFramesRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSONLine(&buf, Request{Op: OpAttach, Stdin: true}); err != nil {
		t.Fatal(err)
	}
	fw := NewFrameWriter(&buf)
	if _, err := fw.Stream(Stdout).Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = fw.Write(Exit, []byte(`{"code":3}`))

	var req Request
	if err := ReadJSONLine(&buf, &req); err != nil || req.Op != OpAttach || !req.Stdin {
		t.Fatalf("request = %+v, %v", req, err)
	}
	typ, p, err := ReadFrame(&buf)
	if err != nil || typ != Stdout || string(p) != "hello" {
		t.Fatalf("frame = %v %q %v", typ, p, err)
	}
	typ, p, _ = ReadFrame(&buf)
	if typ != Exit || !strings.Contains(string(p), `"code":3`) {
		t.Fatalf("exit frame = %v %q", typ, p)
	}
}

func TestOversizedFrameRefused(t *testing.T) {
	hdr := []byte{byte(Stdout), 0xff, 0xff, 0xff, 0xff}
	if _, _, err := ReadFrame(bytes.NewReader(hdr)); err == nil {
		t.Fatal("a 4 GiB frame header was accepted")
	}
}
