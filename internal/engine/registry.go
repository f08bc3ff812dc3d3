package engine

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/image"
	"github.com/berthdev/berth/internal/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// pullStore adapts the image store to registry.Store; its Has and V1Image
// let a pull skip blobs berth holds and stop early when up to date.
type pullStore struct{ *image.Store }

func (s pullStore) Write(ctx context.Context, img v1.Image, tags ...string) error {
	_, err := s.Store.Write(ctx, img, tags...)
	return err
}

// RegistryOptions are the client settings of a pull, push or login.
type RegistryOptions struct {
	// TLSVerify, when false, allows plain HTTP and unverified TLS.
	TLSVerify bool
	// Platform selects from a multi-platform index ("linux/arm64").
	Platform string
	// AllTags pulls every tag of a repository.
	AllTags bool
	// Progress receives transfer events; nil for none.
	Progress registry.Progress
	// AuthFile is berth's own credentials file, read before Docker's.
	AuthFile string
}

func (e *Engine) registryOptions(o RegistryOptions) []registry.Option {
	opts := []registry.Option{
		registry.WithTLSVerify(o.TLSVerify),
		registry.WithInsecureRegistries(e.cfg.InsecureRegistries...),
		registry.WithStagingDir(filepath.Join(e.root, "image", "tmp", "pull")),
	}
	if o.Platform != "" {
		opts = append(opts, registry.WithPlatform(o.Platform))
	}
	if o.AllTags {
		opts = append(opts, registry.WithAllTags(true))
	}
	if o.Progress != nil {
		opts = append(opts, registry.WithProgress(o.Progress))
	}
	if o.AuthFile != "" {
		opts = append(opts, registry.WithAuthFile(o.AuthFile))
	}
	return opts
}

// Pull fetches ref into the image store.
func (e *Engine) Pull(ctx context.Context, ref string, o RegistryOptions) ([]registry.Pulled, error) {
	return registry.Pull(ctx, ref, pullStore{e.images}, e.registryOptions(o)...)
}

// Push sends a stored image to the registry its name points at.
func (e *Engine) Push(ctx context.Context, ref string, o RegistryOptions) (v1.Hash, error) {
	img, err := e.images.V1Image(ctx, ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	full, err := registry.NormalizeReference(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	return registry.Push(ctx, full, img, e.registryOptions(o)...)
}

// Login checks credentials against host and saves them.
func (e *Engine) Login(ctx context.Context, host, user, pass string, o RegistryOptions) (*registry.LoginResult, error) {
	return registry.Login(ctx, host, user, pass, e.registryOptions(o)...)
}

// Logout forgets host's credentials.
func (e *Engine) Logout(ctx context.Context, host string, o RegistryOptions) error {
	return registry.Logout(ctx, host, e.registryOptions(o)...)
}

// PullPolicy says when run and create pull their image.
type PullPolicy string

// The pull policies of --pull.
const (
	PullMissing PullPolicy = "missing"
	PullAlways  PullPolicy = "always"
	PullNever   PullPolicy = "never"
)

// EnsureImage applies a pull policy before a workload is created.
func (e *Engine) EnsureImage(ctx context.Context, ref string, policy PullPolicy, o RegistryOptions) error {
	switch policy {
	case PullNever:
		return nil
	case PullAlways:
		_, err := e.Pull(ctx, ref, o)
		return err
	case PullMissing, "":
		if _, err := e.images.Get(ctx, ref); err == nil || !errdefs.IsNotFound(err) {
			return err
		}
		_, err := e.Pull(ctx, ref, o)
		return err
	default:
		return fmt.Errorf("invalid --pull %q: use always, missing or never: %w", policy, errdefs.ErrInvalidArgument)
	}
}
