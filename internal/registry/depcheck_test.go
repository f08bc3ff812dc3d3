package registry_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportBoundaries keeps the client and server free of berth packages
// other than errdefs: the image store, engine and CLI are consumers.
func TestImportBoundaries(t *testing.T) {
	allowed := map[string]bool{
		"github.com/berthdev/berth/internal/errdefs": true,
	}
	for _, dir := range []string{".", "server"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range af.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if strings.HasPrefix(p, "github.com/berthdev/berth/") && !allowed[p] {
					t.Errorf("%s imports %s", f, p)
				}
			}
		}
	}
}
