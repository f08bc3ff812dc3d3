package engine

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/build"
	"github.com/berthdev/berth/internal/cgroups"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/image"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/runtime/oci"
	"github.com/berthdev/berth/internal/snapshot/overlay"
	"github.com/berthdev/berth/internal/spec"
)

// Build builds an image from a Dockerfile (see package build), stores it
// and tags it. RUN steps run as containers on the default OCI runtime.
func (e *Engine) Build(ctx context.Context, opts build.Options) (*image.Image, error) {
	x := &buildExecutor{e: e}
	x.sweep(ctx)
	b, err := build.New(e.buildRoot(), filepath.Join(e.buildStateDir(), "runs"), buildImages{e.images}, buildSnapshots{e.snaps}, x)
	if err != nil {
		return nil, err
	}
	id, err := b.Build(ctx, opts)
	if err != nil {
		return nil, err
	}
	return e.images.Get(ctx, id.String())
}

func (e *Engine) buildRoot() string     { return filepath.Join(e.root, "build") }
func (e *Engine) buildStateDir() string { return filepath.Join(e.stateDir, "build") }

// bundlesDir holds the bundles of running build steps, one per container
// ID, each with a lock file its step holds while it runs.
func (e *Engine) bundlesDir() string { return filepath.Join(e.buildStateDir(), "bundles") }

// buildImages is the image store as build.Images.
type buildImages struct{ s *image.Store }

func (i buildImages) Image(ctx context.Context, ref string) (v1.Image, error) {
	return i.s.V1Image(ctx, ref)
}

func (i buildImages) LayerDirs(ctx context.Context, id v1.Hash) ([]string, error) {
	img, err := i.s.Get(ctx, id.String())
	if err != nil {
		return nil, err
	}
	return i.s.LayerDirs(ctx, img)
}

func (i buildImages) Write(ctx context.Context, img v1.Image, tags ...string) (v1.Hash, error) {
	stored, err := i.s.Write(ctx, img, tags...)
	if err != nil {
		return v1.Hash{}, err
	}
	return stored.ID, nil
}

// buildSnapshots is the overlay snapshotter as build.Snapshotter.
type buildSnapshots struct{ *overlay.Snapshotter }

func (s buildSnapshots) Diff(ctx context.Context, key string, w io.Writer) error {
	return overlay.Diff(ctx, s.Upper(key), w)
}

// buildExecutor runs RUN steps as containers on the default OCI runtime.
type buildExecutor struct {
	e  *Engine
	rt runtime.Runtime
}

// Run implements build.Executor. The container has Docker's default
// isolation and no network but loopback; its runtime state, cgroup and
// bundle are removed whatever happens.
func (x *buildExecutor) Run(ctx context.Context, req build.RunRequest) (int, error) {
	e := x.e
	if x.rt == nil {
		info, err := e.RuntimeInfo(ctx)
		if err != nil {
			return 0, err
		}
		rt, err := oci.New(info.Chosen, e.ociRuntimeRoot())
		if err != nil {
			return 0, err
		}
		x.rt = rt
	}
	id, err := newID()
	if err != nil {
		return 0, err
	}
	id = "build-" + id[:24]
	bundle := filepath.Join(e.bundlesDir(), id)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return 0, fmt.Errorf("run build step: %w", err)
	}
	defer os.RemoveAll(bundle)
	lock, err := os.OpenFile(filepath.Join(bundle, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 0, fmt.Errorf("run build step: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return 0, fmt.Errorf("run build step: lock bundle: %w", err)
	}
	stdout, stderr := req.Stdout, req.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = stdout
	}
	opts := []spec.Opt{
		spec.WithRootfs(req.Rootfs, false),
		spec.WithProcessArgs(req.Args...),
		spec.WithEnv(req.Env),
		spec.WithCwd(req.Cwd),
		spec.WithUser(req.Rootfs, req.User),
		spec.WithHostname(id),
		spec.WithCgroupsPath(cgroupPath(id)),
	}
	// An image's /etc/hosts is replaced for the step, as in Docker, so
	// localhost resolves; the step's own changes to it are not kept. A
	// missing one is not created: the layer would get an empty file.
	if fi, err := os.Lstat(filepath.Join(req.Rootfs, "etc", "hosts")); err == nil && fi.Mode().IsRegular() {
		hosts := filepath.Join(bundle, "hosts")
		data := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + id + "\n"
		if err := os.WriteFile(hosts, []byte(data), 0o644); err != nil {
			return 0, fmt.Errorf("run build step: %w", err)
		}
		opts = append(opts, spec.WithMounts([]specs.Mount{{Destination: "/etc/hosts", Type: "bind", Source: hosts, Options: []string{"rbind", "rprivate"}}}))
	}
	s, err := spec.Generate(ctx, opts...)
	if err != nil {
		return 0, err
	}
	if err := spec.ResolveExecutable(req.Rootfs, s.Process.Args, s.Process.Env); err != nil {
		fmt.Fprintln(stderr, err)
		if errdefs.IsNotFound(err) {
			return 127, nil
		}
		return 126, nil
	}
	if err := writeBundleSpec(x.rt, bundle, s); err != nil {
		return 0, fmt.Errorf("run build step: %w", err)
	}
	p, err := x.rt.Create(ctx, id, bundle, runtime.IO{Stdout: stdout, Stderr: stderr})
	if err != nil {
		return 0, err
	}
	defer func() {
		// Cleanup must happen even when ctx is cancelled.
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = x.rt.Delete(cctx, id, true)
		_ = cgroups.Remove(cgroupPath(id))
	}()
	if err := x.rt.Start(ctx, id); err != nil {
		return 0, err
	}
	st, err := p.Wait(ctx)
	if err != nil {
		if ctx.Err() != nil {
			_ = x.rt.Kill(context.Background(), id, 9, true)
			wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, _ = p.Wait(wctx)
			cancel()
		}
		return 0, err
	}
	return st.Code, nil
}

// sweep releases what build steps of killed builds left: for every bundle
// whose lock nobody holds, the runtime's state (killing what still runs),
// the cgroup and the bundle.
func (x *buildExecutor) sweep(ctx context.Context) {
	ents, err := os.ReadDir(x.e.bundlesDir())
	if err != nil {
		return
	}
	for _, ent := range ents {
		id := ent.Name()
		dir := filepath.Join(x.e.bundlesDir(), id)
		if f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0); err == nil {
			held := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
			f.Close()
			if held {
				continue
			}
		}
		if x.rt == nil {
			if info, err := x.e.RuntimeInfo(ctx); err == nil {
				if rt, err := oci.New(info.Chosen, x.e.ociRuntimeRoot()); err == nil {
					x.rt = rt
				}
			}
		}
		if x.rt != nil {
			_ = x.rt.Delete(ctx, id, true)
		}
		_ = cgroups.Remove(cgroupPath(id))
		os.RemoveAll(dir)
	}
}
