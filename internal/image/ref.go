package image

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/berthdev/berth/internal/errdefs"
)

const (
	dockerHub      = "docker.io"
	dockerHubIndex = "index.docker.io"
	officialPrefix = dockerHub + "/library/"
)

// Normalize returns the full name of an image reference the way Docker writes
// it: "busybox" → "docker.io/library/busybox:latest", "localhost:5000/x" →
// "localhost:5000/x:latest", "repo@sha256:…" keeps its digest.
func Normalize(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("parse reference %q: %w", ref, errdefs.ErrInvalidArgument)
	}
	return fullName(r), nil
}

// normalizeTag is Normalize for references that must name a tag.
func normalizeTag(ref string) (string, error) {
	t, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("parse tag %q: %w", ref, errdefs.ErrInvalidArgument)
	}
	return fullName(t), nil
}

func fullName(r name.Reference) string {
	reg := r.Context().RegistryStr()
	if reg == dockerHubIndex {
		reg = dockerHub
	}
	repo := reg + "/" + r.Context().RepositoryStr()
	if d, ok := r.(name.Digest); ok {
		return repo + "@" + d.DigestStr()
	}
	return repo + ":" + r.Identifier()
}

// FamiliarName shortens a full name for display the way Docker does:
// "docker.io/library/busybox:latest" → "busybox:latest",
// "docker.io/foo/bar:1" → "foo/bar:1". Other names are returned unchanged.
func FamiliarName(full string) string {
	switch {
	case strings.HasPrefix(full, officialPrefix):
		return strings.TrimPrefix(full, officialPrefix)
	case strings.HasPrefix(full, dockerHub+"/"):
		return strings.TrimPrefix(full, dockerHub+"/")
	}
	return full
}

// idPrefix reports whether ref looks like a full or short image ID
// (at least 12 hex digits, optionally prefixed with "sha256:") and returns
// the lowercase hex part.
func idPrefix(ref string) (string, bool) {
	h := strings.TrimPrefix(ref, "sha256:")
	if len(h) < 12 || len(h) > 64 {
		return "", false
	}
	if _, err := hex.DecodeString(h + strings.Repeat("0", len(h)%2)); err != nil || strings.ToLower(h) != h {
		return "", false
	}
	return h, true
}
