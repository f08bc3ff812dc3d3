package build

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the builder off the CLI, the engine and every concrete
// backend: besides the standard library it may use only these.
func TestImports(t *testing.T) {
	allowed := map[string]bool{
		"github.com/berthdev/berth/internal/errdefs":  true,
		"github.com/berthdev/berth/internal/snapshot": true,
		"github.com/cyphar/filepath-securejoin":       true,
		"github.com/klauspost/compress/gzip":          true,
		"github.com/klauspost/compress/zstd":          true,
		"github.com/moby/patternmatcher":              true,
		"github.com/moby/patternmatcher/ignorefile":   true,
		"go.etcd.io/bbolt":                            true,
		"golang.org/x/sys/unix":                       true,
	}
	allowedPrefixes := []string{
		"github.com/google/go-containerregistry/pkg/v1",
		"github.com/google/go-containerregistry/pkg/name",
		"github.com/moby/buildkit/frontend/dockerfile/",
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
	next:
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if !strings.Contains(strings.SplitN(p, "/", 2)[0], ".") || allowed[p] {
				continue
			}
			for _, pre := range allowedPrefixes {
				if strings.HasPrefix(p, pre) {
					continue next
				}
			}
			t.Errorf("%s imports %s", f, p)
		}
	}
}
