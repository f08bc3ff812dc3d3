package spec

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/errdefs"
)

// knownCapabilities lists Linux capabilities in kernel order (index = number).
var knownCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// DefaultCapabilities returns Docker's default capability set.
func DefaultCapabilities() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
		"CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
		"CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
		"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
	}
}

// allCapabilities returns the known capabilities this kernel supports.
func allCapabilities() []string {
	last := len(knownCapabilities) - 1
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n < last {
			last = n
		}
	}
	return slices.Clone(knownCapabilities[:last+1])
}

const capAll = "ALL"

// normalizeCapabilities turns "net_admin", "NET_ADMIN" and "CAP_NET_ADMIN"
// into "CAP_NET_ADMIN", keeps "ALL", and rejects unknown names.
func normalizeCapabilities(names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	for _, n := range names {
		c := strings.ToUpper(strings.TrimSpace(n))
		if c == capAll {
			out = append(out, capAll)
			continue
		}
		if !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		if !slices.Contains(knownCapabilities, c) {
			return nil, fmt.Errorf("set capabilities: unknown capability %q: %w", n, errdefs.ErrInvalidArgument)
		}
		out = append(out, c)
	}
	return out, nil
}

// WithCapAdd adds capabilities ("NET_ADMIN", "CAP_NET_ADMIN" or "ALL").
//
// Inside Generate, adds and drops are collected and settled after every other
// option by Docker's rules, whatever their order: "ALL" added means every
// capability except the dropped ones; "ALL" dropped means only the added
// ones; otherwise the defaults minus drops plus adds. Applied on its own to a
// spec, it adds to the current set at once.
func WithCapAdd(caps []string) Opt {
	return func(ctx context.Context, s *specs.Spec) error {
		add, err := normalizeCapabilities(caps)
		if err != nil {
			return err
		}
		if g := generationFrom(ctx); g != nil {
			g.capAdd = append(g.capAdd, add...)
			return nil
		}
		return applyCapabilities(s, add, nil)
	}
}

// WithCapDrop drops capabilities ("CHOWN", "CAP_CHOWN" or "ALL"); see
// WithCapAdd for how adds and drops combine.
func WithCapDrop(caps []string) Opt {
	return func(ctx context.Context, s *specs.Spec) error {
		drop, err := normalizeCapabilities(caps)
		if err != nil {
			return err
		}
		if g := generationFrom(ctx); g != nil {
			g.capDrop = append(g.capDrop, drop...)
			return nil
		}
		return applyCapabilities(s, nil, drop)
	}
}

// applyCapabilities tweaks the bounding set by Docker's rules and sets the
// permitted and effective sets to match. Inheritable and ambient stay empty,
// so a non-root user loses them at execve, as with Docker.
func applyCapabilities(s *specs.Spec, add, drop []string) error {
	if len(add) == 0 && len(drop) == 0 {
		return nil
	}
	if s.Process == nil {
		s.Process = &specs.Process{}
	}
	if s.Process.Capabilities == nil {
		s.Process.Capabilities = &specs.LinuxCapabilities{}
	}
	var caps []string
	switch {
	case slices.Contains(add, capAll):
		for _, c := range allCapabilities() {
			if !slices.Contains(drop, c) {
				caps = append(caps, c)
			}
		}
	case slices.Contains(drop, capAll):
		caps = add
	default:
		for _, c := range s.Process.Capabilities.Bounding {
			if !slices.Contains(drop, c) {
				caps = append(caps, c)
			}
		}
		caps = append(caps, add...)
	}
	caps = dedup(caps)
	c := s.Process.Capabilities
	c.Bounding = caps
	c.Permitted = slices.Clone(caps)
	c.Effective = slices.Clone(caps)
	return nil
}

func dedup(in []string) []string {
	out := make([]string, 0, len(in))
	for _, v := range in {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
