package runtime

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/berthdev/berth/internal/errdefs"
	"golang.org/x/sys/unix"
)

// ParseSignal reads a signal as Docker does: "TERM", "SIGTERM" or "15".
func ParseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("invalid signal %q: %w", s, errdefs.ErrInvalidArgument)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("invalid signal %q: use a name like TERM or a number: %w", s, errdefs.ErrInvalidArgument)
}
