package build

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/berthdev/berth/internal/errdefs"
)

// buildContext is the directory COPY and ADD read from, with its
// .dockerignore patterns.
type buildContext struct {
	dir    string
	ignore *patternmatcher.PatternMatcher
}

// openContext opens the build context dir. The ignore file is
// <Dockerfile>.dockerignore next to the Dockerfile when there is one (as
// BuildKit), else dir/.dockerignore.
func openContext(dir, dockerfile string) (*buildContext, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("build context %s: not a directory: %w", dir, errdefs.ErrInvalidArgument)
	}
	c := &buildContext{dir: abs}
	candidates := []string{filepath.Join(abs, ".dockerignore")}
	if dockerfile != "" {
		candidates = append([]string{dockerfile + ".dockerignore"}, candidates...)
	}
	for _, p := range candidates {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w: %w", p, err, errdefs.ErrInvalidArgument)
		}
		if c.ignore, err = patternmatcher.New(patterns); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", p, err, errdefs.ErrInvalidArgument)
		}
		break
	}
	return c, nil
}
