package snapshot

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestDepcheck keeps snapshotters away from runtime, engine and the image store.
func TestDepcheck(t *testing.T) {
	for _, dir := range []string{".", "overlay"} {
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
				for _, d := range []string{"internal/runtime", "internal/engine", "internal/cli", "internal/image"} {
					if strings.Contains(imp.Path.Value, "berthdev/berth/"+d) {
						t.Errorf("%s imports %s", f, imp.Path.Value)
					}
				}
			}
		}
	}
}
