package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/spec"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// processArgs applies Docker's rules: --entrypoint replaces the image's
// Entrypoint and clears its Cmd; arguments after the image replace Cmd.
func processArgs(cfg state.Config, img v1.Config) ([]string, error) {
	entry := img.Entrypoint
	cmd := img.Cmd
	if cfg.EntrypointSet {
		entry = cfg.Entrypoint
		cmd = nil
	}
	if len(cfg.Cmd) > 0 {
		cmd = cfg.Cmd
	}
	args := append(append([]string{}, entry...), cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("no command specified: the image has no Entrypoint or Cmd, give one after the image name: %w", errdefs.ErrInvalidArgument)
	}
	return args, nil
}

// buildSpec turns a workload record and its image into an OCI runtime spec
// for a root filesystem mounted at rootfs.
func (e *Engine) buildSpec(ctx context.Context, c *state.Container, rootfs string, size *runtime.ConsoleSize) (*specs.Spec, error) {
	cfg := c.Config
	img := c.ImageConfig
	args, err := processArgs(cfg, img)
	if err != nil {
		return nil, err
	}
	hostname := cfg.Hostname
	if hostname == "" {
		hostname = c.ID[:12]
	}
	env := append([]string{}, img.Env...)
	env = append(env, "HOSTNAME="+hostname)
	if cfg.Tty {
		env = append(env, "TERM=xterm")
	}
	env = append(env, cfg.Env...)
	cwd := cfg.WorkingDir
	if cwd == "" {
		cwd = img.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	user := cfg.User
	if user == "" {
		user = img.User
	}
	etc, err := e.writeEtcFiles(c.ID, hostname)
	if err != nil {
		return nil, err
	}
	opts := []spec.Opt{
		spec.WithRootfs(rootfs, cfg.ReadOnly),
		spec.WithProcessArgs(args...),
		spec.WithEnv(env),
		spec.WithCwd(cwd),
		spec.WithTTY(cfg.Tty),
		spec.WithHostname(hostname),
		spec.WithUser(rootfs, user),
		spec.WithCgroupsPath(cgroupPath(c.ID)),
		spec.WithMounts(etc),
		spec.WithAnnotations(map[string]string{"org.berth.container.name": c.Name, "org.berth.isolation": string(cfg.Isolation)}),
	}
	if cfg.Memory > 0 {
		opts = append(opts, spec.WithMemoryLimit(cfg.Memory))
	}
	if cfg.CPUs > 0 {
		opts = append(opts, spec.WithCPUs(cfg.CPUs))
	}
	if cfg.PidsLimit > 0 {
		opts = append(opts, spec.WithPidsLimit(cfg.PidsLimit))
	}
	if len(cfg.CapAdd) > 0 {
		opts = append(opts, spec.WithCapAdd(cfg.CapAdd))
	}
	if len(cfg.CapDrop) > 0 {
		opts = append(opts, spec.WithCapDrop(cfg.CapDrop))
	}
	for _, so := range cfg.SecurityOpt {
		switch {
		case so == "no-new-privileges" || so == "no-new-privileges:true" || so == "no-new-privileges=true":
			opts = append(opts, spec.WithNoNewPrivileges())
		case strings.HasPrefix(so, "seccomp=") || strings.HasPrefix(so, "seccomp:"):
			opts = append(opts, spec.WithSeccomp(so[len("seccomp="):]))
		default:
			return nil, fmt.Errorf("unknown --security-opt %q: use no-new-privileges, seccomp=unconfined or seccomp=FILE: %w", so, errdefs.ErrInvalidArgument)
		}
	}
	if cfg.Tty && size != nil {
		opts = append(opts, spec.WithConsoleSize(uint(size.Width), uint(size.Height)))
	}
	// Volumes, binds, tmpfs and the network namespace (volume.go, network.go).
	attachOpts, err := e.attachmentSpecOpts(ctx, c, rootfs)
	if err != nil {
		return nil, err
	}
	opts = append(opts, attachOpts...)
	s, err := spec.Generate(ctx, opts...)
	if err != nil {
		return nil, err
	}
	if err := spec.ResolveExecutable(rootfs, s.Process.Args, s.Process.Env); err != nil && !commandInMounts(c, s.Process.Args, s.Process.Env) { // volume.go
		return nil, &CommandError{Err: err}
	}
	return s, nil
}

// CommandError is a workload command that is missing or cannot be run.
type CommandError struct{ Err error }

func (e *CommandError) Error() string { return e.Err.Error() }
func (e *CommandError) Unwrap() error { return e.Err }

// writeEtcFiles writes the /etc/hosts and /etc/hostname a workload gets
// (in netFilesDir, network.go) and returns the bind mounts for them.
func (e *Engine) writeEtcFiles(id, hostname string) ([]specs.Mount, error) {
	dir := e.netFilesDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	files := map[string]string{
		"hostname": hostname + "\n",
		"hosts":    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + hostname + "\n",
	}
	var mounts []specs.Mount
	for _, name := range []string{"hostname", "hosts"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(files[name]), 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", p, err)
		}
		mounts = append(mounts, specs.Mount{Destination: "/etc/" + name, Type: "bind", Source: p, Options: []string{"rbind", "rprivate"}})
	}
	return mounts, nil
}

// specPreparer is a backend that adjusts a spec before it is written (the
// oci backend passes crun a precompiled seccomp filter).
type specPreparer interface {
	PrepareSpec(s *specs.Spec)
}

// writeBundleSpec writes s as bundle/config.json for rt, letting rt adjust
// it first.
func writeBundleSpec(rt runtime.Runtime, bundle string, s *specs.Spec) error {
	if p, ok := rt.(specPreparer); ok {
		p.PrepareSpec(s)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
}
