package image

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestDepcheck keeps the store away from the packages it must not import.
func TestDepcheck(t *testing.T) {
	checkImports(t, ".", []string{"internal/registry", "internal/runtime", "internal/engine", "internal/cli", "internal/snapshot"})
}

func checkImports(t *testing.T, dir string, denied []string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			for _, d := range denied {
				if strings.Contains(imp.Path.Value, "berthdev/berth/"+d) {
					t.Errorf("%s imports %s", f, imp.Path.Value)
				}
			}
		}
	}
}
