package build

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/snapshot"
)

// Images is the image store a build reads its bases from and writes its
// result to.
type Images interface {
	// Image returns the stored image ref names (a name, an ID or a digest).
	// A missing image is an error wrapping errdefs.ErrNotFound.
	Image(ctx context.Context, ref string) (v1.Image, error)
	// LayerDirs returns the unpacked, read-only layer directories of the
	// stored image whose ID (config digest) is id, bottom→top.
	LayerDirs(ctx context.Context, id v1.Hash) ([]string, error)
	// Write stores img, points tags at it (all or nothing) and returns its ID.
	Write(ctx context.Context, img v1.Image, tags ...string) (v1.Hash, error)
}

// Puller is what an Images may also implement to fetch missing base images
// and to honour --pull. Without it a missing base image is an error.
type Puller interface {
	Pull(ctx context.Context, ref string, platform string) error
}

// Snapshotter makes the writable layers steps run in.
//
//	mounts, err := sn.Prepare(ctx, key, lowers) // lowers bottom→top
//	… mount, change files, unmount …
//	err = sn.Diff(ctx, key, w)                   // the changes as an OCI layer tar
//	upper := sn.Upper(key)                       // usable as a lower dir once unmounted
//	err = sn.Remove(ctx, key)
type Snapshotter interface {
	Prepare(ctx context.Context, key string, lowers []string) ([]snapshot.Mount, error)
	// Upper is the directory holding the snapshot's changes, in the form
	// overlayfs lower dirs take (whiteouts as 0:0 devices, opaque xattrs).
	Upper(key string) string
	// Diff writes the snapshot's changes as an uncompressed OCI layer tar.
	Diff(ctx context.Context, key string, w io.Writer) error
	Remove(ctx context.Context, key string) error
}

// Executor runs RUN commands.
type Executor interface {
	// Run runs req.Args in the mounted, writable root filesystem req.Rootfs
	// and waits for it. The exit code is that of the command (127 when it
	// does not exist); err is for failures to run it at all. Run leaves
	// nothing behind (runtime state, cgroups, bundle) when it returns, even
	// when ctx is cancelled.
	Run(ctx context.Context, req RunRequest) (exitCode int, err error)
}

// RunRequest is one command to run.
type RunRequest struct {
	Rootfs         string   // mounted root filesystem
	Args           []string // argv
	Env            []string // KEY=VALUE
	Cwd            string   // absolute, exists in Rootfs
	User           string   // user[:group], names or IDs; empty: root
	Stdout, Stderr io.Writer
}

// Options describe one build.
type Options struct {
	// ContextDir is the build context: COPY and ADD sources are relative to it.
	ContextDir string
	// Dockerfile is the Dockerfile's path. Default: ContextDir/Dockerfile.
	Dockerfile string
	// DockerfileContent, when not nil, is used instead of reading Dockerfile.
	DockerfileContent []byte
	// Tags name the result; none leaves it untagged.
	Tags []string
	// BuildArgs override ARG defaults (--build-arg).
	BuildArgs map[string]string
	// Target is the stage to build. Default: the last one.
	Target string
	// NoCache runs every step; results are still cached for later builds.
	NoCache bool
	// Pull fetches base images even when stored (needs a Puller).
	Pull bool
	// Labels are added to the result's config.
	Labels map[string]string
	// Platform is os/arch[/variant]; only the host's is supported. Default: the host's.
	Platform string
	// Out receives progress and the RUN output; Err the RUN commands'
	// standard error (default: Out). Nil discards.
	Out, Err io.Writer
}

// Builder builds images. It is safe for one build at a time per process;
// several processes may share its directories.
type Builder struct {
	images Images
	snaps  Snapshotter
	exec   Executor
	cache  *cache
	tmp    string
}

// New returns a Builder keeping its cache (index, layer blobs and unpacked
// layers) under root and its scratch mount points under tmp.
func New(root, tmp string, images Images, snaps Snapshotter, exec Executor) (*Builder, error) {
	if images == nil || snaps == nil || exec == nil {
		return nil, fmt.Errorf("new builder: missing image store, snapshotter or executor: %w", errdefs.ErrInvalidArgument)
	}
	c, err := openCache(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(tmp, 0o711); err != nil {
		return nil, fmt.Errorf("new builder: %w", err)
	}
	return &Builder{images: images, snaps: snaps, exec: exec, cache: c, tmp: tmp}, nil
}

// StepError is a build step that failed: where, and why.
type StepError struct {
	Step, Total int    // 1-based step number and the number of steps
	Instruction string // the instruction as written
	File        string // the Dockerfile
	Line        int    // its first line in the Dockerfile
	ExitCode    int    // the RUN command's exit code; 0 when it did not run
	Err         error
}

func (e *StepError) Error() string {
	loc := fmt.Sprintf("%s:%d", filepath.Base(e.File), e.Line)
	if e.ExitCode != 0 {
		return fmt.Sprintf("step %d/%d (%s) %q: command exited with code %d", e.Step, e.Total, loc, e.Instruction, e.ExitCode)
	}
	return fmt.Sprintf("step %d/%d (%s) %q: %v", e.Step, e.Total, loc, e.Instruction, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// errExit is the class of a RUN command that exited non-zero.
var errExit = fmt.Errorf("command failed: %w", errdefs.ErrInvalidArgument)

// hostPlatform is the only platform berth builds for.
func hostPlatform() (os_, arch, variant string) {
	variant = ""
	if runtime.GOARCH == "arm64" {
		variant = "v8"
	}
	return "linux", runtime.GOARCH, variant
}

// checkPlatform accepts "", "linux", "linux/ARCH" and "linux/ARCH/VARIANT"
// for the host's architecture.
func checkPlatform(p string) error {
	if p == "" {
		return nil
	}
	os_, arch, _ := hostPlatform()
	parts := strings.Split(strings.ToLower(p), "/")
	if parts[0] != os_ || (len(parts) > 1 && parts[1] != arch && !(arch == "amd64" && parts[1] == "x86_64")) || len(parts) > 3 {
		return fmt.Errorf("platform %q: berth builds only for %s/%s (no emulation): %w", p, os_, arch, errdefs.ErrInvalidArgument)
	}
	return nil
}
