// Package arch checks berth's import boundaries (ARCHITECTURE.md): which
// package may import which, so the layering cannot rot silently.
package arch

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/berthdev/berth/"

// rules: package (prefix) → internal packages it must not import
// directly.
var rules = map[string][]string{
	"internal/cli":          {"internal/runtime/oci", "internal/runtime/vm", "internal/engine/state", "internal/snapshot/overlay"},
	"internal/engine":       {"internal/cli"},
	"internal/engine/state": {"internal/runtime", "internal/engine", "internal/cli", "internal/image"},
	"internal/image":        {"internal/registry", "internal/runtime", "internal/engine", "internal/cli"},
	"internal/snapshot":     {"internal/runtime", "internal/engine", "internal/cli"},
	"internal/spec":         {"internal/runtime", "internal/engine", "internal/cli"},
	"internal/runtime/oci":  {"internal/runtime/vm", "internal/engine", "internal/cli"},
	"internal/runtime/vm":   {"internal/runtime/oci", "internal/engine", "internal/cli"},
	"internal/registry":     {"internal/engine", "internal/cli", "internal/runtime"},
	"internal/build":        {"internal/cli", "internal/runtime/oci", "internal/runtime/vm"},
	"internal/attach":       {"internal/engine", "internal/cli"},
	"internal/logs":         {"internal/engine", "internal/cli"},
	"internal/cgroups":      {"internal/engine", "internal/cli", "internal/runtime"},
	"internal/network":      {"internal/runtime", "internal/engine", "internal/cli", "internal/volume"},
	"internal/volume":       {"internal/runtime", "internal/engine", "internal/cli", "internal/network"},
}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func TestImportBoundaries(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "-deps=false", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p.ImportPath, mod)
		if rel == "cmd/berth" {
			for _, imp := range p.Imports {
				if strings.HasPrefix(imp, mod) && imp != mod+"internal/cli" {
					t.Errorf("cmd/berth imports %s: main may import only internal/cli", imp)
				}
			}
		}
		if rel == "internal/errdefs" {
			for _, imp := range p.Imports {
				if strings.Contains(imp, ".") {
					t.Errorf("errdefs imports %s: stdlib only", imp)
				}
			}
		}
		for prefix, banned := range rules {
			if rel != prefix && !strings.HasPrefix(rel, prefix+"/") {
				continue
			}
			for _, dep := range p.Imports {
				for _, b := range banned {
					if dep == mod+b || strings.HasPrefix(dep, mod+b+"/") {
						if strings.HasPrefix(rel, b) {
							continue // a package may use its own children
						}
						t.Errorf("%s depends on %s (forbidden: %s must not import %s)", rel, strings.TrimPrefix(dep, mod), prefix, b)
					}
				}
			}
		}
	}
}
