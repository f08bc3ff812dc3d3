package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/spec"
	"github.com/berthdev/berth/internal/volume"
	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Volume types callers use, re-exported so the CLI needs only the engine.
type (
	// Volume is one named volume.
	Volume = volume.Volume
	// MountSpec is one filesystem a workload asked for.
	MountSpec = state.MountSpec
)

// Mount types, re-exported from state.
const (
	MountBind   = state.MountBind
	MountVolume = state.MountVolume
	MountTmpfs  = state.MountTmpfs
)

func (e *Engine) volumes() (*volume.Store, error) {
	return volume.Open(filepath.Join(e.root, "volumes"))
}

// resolveMounts turns a new workload's mounts and its image's VOLUMEs into
// the recorded list: named volumes exist (created on first use), anonymous
// ones have names, bind sources are absolute. It returns the anonymous
// volumes it created, for the caller to remove if the create fails.
func (e *Engine) resolveMounts(ctx context.Context, c *state.Container) (created []string, err error) {
	vols, err := e.volumes()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			e.removeVolumes(ctx, created)
			created = nil
		}
	}()
	targets := map[string]bool{}
	var out []state.MountSpec
	add := func(m state.MountSpec) error {
		if !path.IsAbs(m.Target) {
			return fmt.Errorf("mount target %q must be an absolute path: %w", m.Target, errdefs.ErrInvalidArgument)
		}
		m.Target = path.Clean(m.Target)
		if m.Target == "/" {
			return fmt.Errorf("cannot mount over /: %w", errdefs.ErrInvalidArgument)
		}
		if targets[m.Target] {
			return fmt.Errorf("duplicate mount point %s: %w", m.Target, errdefs.ErrInvalidArgument)
		}
		targets[m.Target] = true
		switch m.Type {
		case state.MountVolume:
			if m.Source == "" {
				name, err := volume.NewAnonymousName()
				if err != nil {
					return err
				}
				if _, err := vols.Create(ctx, name, volume.CreateOptions{Anonymous: true}); err != nil {
					return err
				}
				created = append(created, name)
				m.Source, m.Anonymous = name, true
			} else {
				_, fresh, err := vols.Ensure(ctx, m.Source)
				if err != nil {
					return err
				}
				if fresh {
					created = append(created, m.Source)
				}
			}
		case state.MountBind:
			if !filepath.IsAbs(m.Source) {
				return fmt.Errorf("bind source %q must be an absolute path: %w", m.Source, errdefs.ErrInvalidArgument)
			}
			if _, err := os.Stat(m.Source); err != nil {
				if !errors.Is(err, os.ErrNotExist) || !m.CreateHostPath {
					return fmt.Errorf("bind source path %s: %w", m.Source, errdefs.ErrInvalidArgument)
				}
				if err := os.MkdirAll(m.Source, 0o755); err != nil {
					return fmt.Errorf("create bind source %s: %w", m.Source, err)
				}
			}
		case state.MountTmpfs:
		default:
			return fmt.Errorf("unknown mount type %q: use bind, volume or tmpfs: %w", m.Type, errdefs.ErrInvalidArgument)
		}
		out = append(out, m)
		return nil
	}
	for _, m := range c.Config.Mounts {
		if err := add(m); err != nil {
			return created, err
		}
	}
	var imageVols []string
	for p := range c.ImageConfig.Volumes {
		imageVols = append(imageVols, p)
	}
	sort.Strings(imageVols)
	for _, p := range imageVols {
		if !targets[path.Clean(p)] {
			if err := add(state.MountSpec{Type: state.MountVolume, Target: p}); err != nil {
				return created, err
			}
		}
	}
	c.Mounts = out
	return created, nil
}

// removeVolumes removes volumes by name, ignoring the missing.
func (e *Engine) removeVolumes(ctx context.Context, names []string) {
	vols, err := e.volumes()
	if err != nil {
		return
	}
	for _, n := range names {
		_ = vols.Remove(ctx, n)
	}
}

// removeAnonymousVolumes removes the anonymous volumes of a workload that
// is gone, unless another workload mounts them too.
func (e *Engine) removeAnonymousVolumes(ctx context.Context, c *state.Container) {
	var names []string
	for _, m := range c.Mounts {
		if m.Type == state.MountVolume && m.Anonymous {
			names = append(names, m.Source)
		}
	}
	if len(names) == 0 {
		return
	}
	used, _ := e.volumeUsers(ctx)
	var free []string
	for _, n := range names {
		if len(used[n]) == 0 {
			free = append(free, n)
		}
	}
	e.removeVolumes(ctx, free)
}

// volumeSpecOpts fill empty volumes from the image (rootfs is mounted) and
// return the spec option that mounts the workload's volumes, binds and
// tmpfs.
func (e *Engine) volumeSpecOpts(ctx context.Context, c *state.Container, rootfs string) ([]spec.Opt, error) {
	if len(c.Mounts) == 0 {
		return nil, nil
	}
	vols, err := e.volumes()
	if err != nil {
		return nil, err
	}
	var mounts []specs.Mount
	for _, m := range c.Mounts {
		switch m.Type {
		case state.MountVolume:
			src := vols.Path(m.Source)
			if _, err := os.Stat(src); err != nil {
				return nil, fmt.Errorf("volume %s of %s: %w", m.Source, c.Name, errdefs.ErrNotFound)
			}
			if !m.NoCopy {
				if err := copyUpFromImage(rootfs, m.Target, src); err != nil {
					return nil, fmt.Errorf("fill volume %s from the image's %s: %w", m.Source, m.Target, err)
				}
			}
			mounts = append(mounts, bindMount(src, m))
		case state.MountBind:
			mounts = append(mounts, bindMount(m.Source, m))
		case state.MountTmpfs:
			opts := append([]string{"nosuid", "nodev"}, m.Options...)
			if m.ReadOnly {
				opts = append(opts, "ro")
			}
			mounts = append(mounts, specs.Mount{Destination: m.Target, Type: "tmpfs", Source: "tmpfs", Options: opts})
		}
	}
	return []spec.Opt{spec.WithMounts(mounts)}, nil
}

func bindMount(src string, m state.MountSpec) specs.Mount {
	opts := []string{"rbind"}
	prop := "rprivate"
	for _, o := range m.Options {
		switch o {
		case "private", "rprivate", "shared", "rshared", "slave", "rslave":
			prop = o
		}
	}
	opts = append(opts, prop)
	if m.ReadOnly {
		opts = append(opts, "ro")
	}
	return specs.Mount{Destination: m.Target, Type: "bind", Source: src, Options: opts}
}

// copyUpFromImage copies the image's content at target into an empty
// volume directory, like Docker does for a volume's first use.
func copyUpFromImage(rootfs, target, dst string) error {
	empty, err := volume.IsEmpty(dst)
	if err != nil || !empty {
		return err
	}
	src, err := securejoin.SecureJoin(rootfs, target)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(src)
	if err != nil || !fi.IsDir() {
		return nil // nothing there in the image
	}
	return volume.CopyUp(src, dst)
}

// volumeUsers maps each volume name to the workloads (any state) that mount it.
func (e *Engine) volumeUsers(ctx context.Context) (map[string][]string, error) {
	cs, err := e.db.List(ctx)
	if err != nil {
		return nil, err
	}
	used := map[string][]string{}
	for _, c := range cs {
		for _, m := range c.Mounts {
			if m.Type == state.MountVolume {
				used[m.Source] = append(used[m.Source], c.Name)
			}
		}
	}
	return used, nil
}

// VolumeCreate makes a named volume.
func (e *Engine) VolumeCreate(ctx context.Context, name string, labels map[string]string) (*Volume, error) {
	vols, err := e.volumes()
	if err != nil {
		return nil, err
	}
	if name == "" {
		if name, err = volume.NewAnonymousName(); err != nil {
			return nil, err
		}
	}
	return vols.Create(ctx, name, volume.CreateOptions{Labels: labels})
}

// VolumeInfo is a volume and who uses it.
type VolumeInfo struct {
	*Volume
	UsedBy []string `json:"UsedBy,omitempty"`
}

// VolumeList returns every volume.
func (e *Engine) VolumeList(ctx context.Context) ([]VolumeInfo, error) {
	vols, err := e.volumes()
	if err != nil {
		return nil, err
	}
	all, err := vols.List(ctx)
	if err != nil {
		return nil, err
	}
	used, err := e.volumeUsers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]VolumeInfo, 0, len(all))
	for _, v := range all {
		out = append(out, VolumeInfo{Volume: v, UsedBy: used[v.Name]})
	}
	return out, nil
}

// VolumeInspect describes one volume.
func (e *Engine) VolumeInspect(ctx context.Context, name string) (*VolumeInfo, error) {
	vols, err := e.volumes()
	if err != nil {
		return nil, err
	}
	v, err := vols.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	used, err := e.volumeUsers(ctx)
	if err != nil {
		return nil, err
	}
	return &VolumeInfo{Volume: v, UsedBy: used[v.Name]}, nil
}

// VolumeRemove deletes a volume and its data. One that a workload (in any
// state) mounts is refused unless force.
func (e *Engine) VolumeRemove(ctx context.Context, name string, force bool) error {
	vols, err := e.volumes()
	if err != nil {
		return err
	}
	if _, err := vols.Get(ctx, name); err != nil {
		return err
	}
	used, err := e.volumeUsers(ctx)
	if err != nil {
		return err
	}
	if users := used[name]; len(users) > 0 && !force {
		return fmt.Errorf("volume %s is in use by %s: remove them first or use -f: %w", name, strings.Join(users, ", "), errdefs.ErrConflict)
	}
	return vols.Remove(ctx, name)
}

// VolumePrune removes unused anonymous volumes, and unused named ones too
// when all.
func (e *Engine) VolumePrune(ctx context.Context, all bool) ([]string, error) {
	infos, err := e.VolumeList(ctx)
	if err != nil {
		return nil, err
	}
	vols, err := e.volumes()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, v := range infos {
		if len(v.UsedBy) > 0 || (!v.Anonymous && !all) {
			continue
		}
		if err := vols.Remove(ctx, v.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, v.Name)
	}
	return removed, errors.Join(errs...)
}

// RemoveWithVolumes removes a workload like Remove, then its anonymous
// volumes (`rm -v`).
func (e *Engine) RemoveWithVolumes(ctx context.Context, ref string, force bool) error {
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return err
	}
	if err := e.Remove(ctx, c.ID, force); err != nil {
		return err
	}
	e.removeAnonymousVolumes(ctx, c)
	return nil
}

// commandInMounts says whether the command may live in one of the
// workload's mounts, which the root filesystem check cannot see: then the
// runtime, not berth, decides whether it exists.
func commandInMounts(c *state.Container, args, env []string) bool {
	if len(args) == 0 || len(c.Mounts) == 0 {
		return false
	}
	under := func(p string) bool {
		p = path.Clean(p)
		for _, m := range c.Mounts {
			if p == m.Target || strings.HasPrefix(p, m.Target+"/") {
				return true
			}
		}
		return false
	}
	if strings.Contains(args[0], "/") {
		return path.IsAbs(args[0]) && under(args[0])
	}
	pathVar := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	for _, dir := range strings.Split(pathVar, ":") {
		if path.IsAbs(dir) && under(path.Join(dir, args[0])) {
			return true
		}
	}
	return false
}
