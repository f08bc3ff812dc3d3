package vm

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDepcheck keeps the microVM backend's packages within their bounds:
// no other backend, engine, CLI or state package, and only the named
// third-party modules (the guest agent must stay small and static).
func TestDepcheck(t *testing.T) {
	allowed := map[string][]string{
		"":            {"github.com/opencontainers/runtime-spec", "golang.org/x/sys", "github.com/vishvananda/netlink", "github.com/vishvananda/netns"},
		"/agentproto": {},
		"/guest":      {"github.com/creack/pty", "golang.org/x/sys", "github.com/vishvananda/netlink", "github.com/vishvananda/netns"},
		"/initramfs":  {},
		"/kmod":       {},
		"/qmp":        {},
		"/ocicli":     {"github.com/opencontainers/runtime-spec", "github.com/spf13/cobra", "github.com/spf13/pflag", "github.com/creack/pty", "golang.org/x/sys", "golang.org/x/term", "github.com/vishvananda/netlink", "github.com/vishvananda/netns"},
	}
	const self = "github.com/berthdev/berth/internal/runtime/vm"
	for sub, third := range allowed {
		pkg := self + sub
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			ok := dep == pkg || strings.HasPrefix(dep, self+"/") || dep == self ||
				dep == "github.com/berthdev/berth/internal/errdefs" || dep == "github.com/berthdev/berth/internal/runtime"
			for _, m := range third {
				ok = ok || dep == m || strings.HasPrefix(dep, m+"/")
			}
			if !ok {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}
