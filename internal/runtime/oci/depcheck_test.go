package oci

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the backend off the engine, the CLI and other backends:
// besides the standard library it may use only these.
func TestImports(t *testing.T) {
	allowed := map[string]bool{
		"github.com/berthdev/berth/internal/errdefs":      true,
		"github.com/berthdev/berth/internal/runtime":      true,
		"github.com/berthdev/berth/internal/spec":         true,
		"github.com/berthdev/berth/internal/cgroups":      true,
		"github.com/opencontainers/runtime-spec/specs-go": true,
		"golang.org/x/sys/unix":                           true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.Contains(strings.SplitN(p, "/", 2)[0], ".") && !allowed[p] {
				t.Errorf("%s imports %s", f, p)
			}
		}
	}
}
