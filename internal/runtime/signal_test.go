package runtime

import (
	"syscall"
	"testing"
)

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		ok   bool
	}{
		{"15", syscall.SIGTERM, true}, {"TERM", syscall.SIGTERM, true}, {"SIGKILL", syscall.SIGKILL, true},
		{"kill", syscall.SIGKILL, true}, {"SIGNOPE", 0, false}, {"99", 0, false}, {"0", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSignal(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSignal(%q) = %v, %v", tt.in, got, err)
		}
	}
}
