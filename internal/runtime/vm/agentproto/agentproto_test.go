package agentproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteJSON(TypeStart, 7, Process{Args: []string{"echo", "hi"}, UID: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(TypeStdinClose, 7, nil); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), MaxPayload+10)
	if _, err := w.StreamWriter(TypeStdout, 3).Write(big); err != nil {
		t.Fatal(err)
	}

	f, err := ReadFrame(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var p Process
	if err := f.Decode(&p); err != nil || f.Type != TypeStart || f.ID != 7 || p.Args[1] != "hi" || p.UID != 1000 {
		t.Fatalf("start frame = %v %d %+v, %v", f.Type, f.ID, p, err)
	}
	f, err = ReadFrame(&buf)
	if err != nil || f.Type != TypeStdinClose || len(f.Payload) != 0 {
		t.Fatalf("close frame = %+v, %v", f, err)
	}
	var got int
	for i := 0; i < 2; i++ {
		f, err = ReadFrame(&buf)
		if err != nil || f.Type != TypeStdout || f.ID != 3 {
			t.Fatalf("data frame %d = %v %d, %v", i, f.Type, f.ID, err)
		}
		got += len(f.Payload)
	}
	if got != len(big) {
		t.Fatalf("got %d bytes of stream data, want %d", got, len(big))
	}
	if _, err := ReadFrame(&buf); err != io.EOF {
		t.Fatalf("after last frame: %v, want EOF", err)
	}
}

func TestReadFrameErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"short header", []byte{1, 0, 0}, io.ErrUnexpectedEOF},
		{"short payload", []byte{8, 0, 0, 0, 1, 0, 0, 0, 5, 'a'}, io.ErrUnexpectedEOF},
		{"too big", []byte{8, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestSetupNetworkRoundTrip: the network configuration survives the wire,
// and a Setup without one decodes to nil (the guest keeps only lo).
func TestSetupNetworkRoundTrip(t *testing.T) {
	in := Setup{RootTag: "berthroot", Network: &Network{
		Interfaces: []Interface{{Name: "eth0", MAC: "0a:58:0a:58:00:05", MTU: 1500, Addresses: []string{"10.88.0.5/16", "fd00::5/64"}}},
		Routes:     []Route{{Dst: "0.0.0.0/0", Gateway: "10.88.0.1", Device: "eth0", Metric: 5}},
	}}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteJSON(TypeSetup, 0, in); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteJSON(TypeSetup, 0, Setup{RootTag: "berthroot"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []Setup{in, {RootTag: "berthroot"}} {
		f, err := ReadFrame(&buf)
		if err != nil {
			t.Fatal(err)
		}
		var out Setup
		if err := f.Decode(&out); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(out, want) {
			t.Errorf("round trip = %+v, want %+v", out, want)
		}
	}
	if b, _ := json.Marshal(Setup{RootTag: "x"}); bytes.Contains(b, []byte("network")) {
		t.Errorf("a Setup without network encodes it: %s", b)
	}
}
