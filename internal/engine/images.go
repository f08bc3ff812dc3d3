package engine

import (
	"context"
	"fmt"

	"github.com/berthdev/berth/internal/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// RemoveImage removes an image like `docker rmi`: refused while a workload
// (running or not) uses it, unless force, in which case only its names go.
func (e *Engine) RemoveImage(ctx context.Context, ref string, force bool) (untagged []string, deleted []v1.Hash, err error) {
	img, err := e.images.Get(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	cs, err := e.db.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, c := range cs {
		if c.ImageID != img.ID.String() {
			continue
		}
		if !force {
			return nil, nil, fmt.Errorf("unable to remove image %s: container %s (%s) uses it: remove the container first or use -f: %w", ref, c.ID[:12], c.Name, errdefs.ErrConflict)
		}
		// In use: untag only, so the workload keeps its layers.
		for _, t := range img.RepoTags {
			if err := e.images.Untag(ctx, t); err != nil {
				return untagged, nil, err
			}
			untagged = append(untagged, t)
		}
		return untagged, nil, nil
	}
	return e.images.Remove(ctx, ref, force)
}
