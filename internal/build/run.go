package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/snapshot"
)

// run is one build in progress.
type run struct {
	b       *Builder
	opts    Options
	p       *plan
	out     io.Writer
	errw    io.Writer
	bctx    *buildContext
	bases   map[string]*baseImage // by reference and by ID
	results map[*stagePlan]*stageState
	step    int
	total   int
	fresh   map[string]*entry // cache entries made by this build
	dir     string            // this run's mount points
	nextKey int
}

// baseImage is an image from the store used by FROM or COPY --from.
type baseImage struct {
	ref    string
	id     v1.Hash
	img    v1.Image
	cfg    *v1.ConfigFile
	layers []layerRef
	dirs   map[v1.Hash]string // unpacked layers by DiffID, once asked for
}

// stageState is a stage's image so far, plus what only the build sees.
type stageState struct {
	key    string // cache key of the state: its chain of steps
	cfg    *v1.ConfigFile
	layers []layerRef
	args   *argScope // ARGs declared in the stage
	cmdSet bool      // CMD given in this stage (ENTRYPOINT then keeps it)
}

func (s *stageState) clone() *stageState {
	return &stageState{key: s.key, cfg: s.cfg.DeepCopy(), layers: append([]layerRef(nil), s.layers...), args: newArgScope()}
}

// Build builds the image opts describe, stores it, tags it and returns its ID.
func (b *Builder) Build(ctx context.Context, opts Options) (v1.Hash, error) {
	r := &run{b: b, opts: opts, out: opts.Out, errw: opts.Err, bases: map[string]*baseImage{},
		results: map[*stagePlan]*stageState{}, fresh: map[string]*entry{}}
	if r.out == nil {
		r.out = io.Discard
	}
	if r.errw == nil {
		r.errw = r.out
	}
	if err := checkPlatform(opts.Platform); err != nil {
		return v1.Hash{}, err
	}
	for _, t := range opts.Tags {
		if _, err := name.NewTag(t); err != nil {
			return v1.Hash{}, fmt.Errorf("tag %q: %w: %w", t, err, errdefs.ErrInvalidArgument)
		}
	}
	if opts.ContextDir == "" {
		return v1.Hash{}, fmt.Errorf("build: no context directory: %w", errdefs.ErrInvalidArgument)
	}
	file := opts.Dockerfile
	if file == "" {
		file = filepath.Join(opts.ContextDir, "Dockerfile")
	}
	data := opts.DockerfileContent
	if data == nil {
		var err error
		if data, err = os.ReadFile(file); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return v1.Hash{}, fmt.Errorf("read Dockerfile: %w: %w", err, errdefs.ErrNotFound)
			}
			return v1.Hash{}, fmt.Errorf("read Dockerfile: %w", err)
		}
	}
	p, err := parseDockerfile(file, data, opts.BuildArgs, opts.Target)
	if err != nil {
		return v1.Hash{}, err
	}
	r.p = p
	for _, w := range p.warnings {
		fmt.Fprintf(r.errw, "[WARNING]: %s\n", w)
	}
	dfPath := ""
	if opts.DockerfileContent == nil {
		dfPath = file
	}
	if r.bctx, err = openContext(opts.ContextDir, dfPath); err != nil {
		return v1.Hash{}, err
	}
	b.sweep(ctx)
	dir, end, err := b.startRun()
	if err != nil {
		return v1.Hash{}, err
	}
	defer end()
	r.dir = dir

	// Resolve every base image first: a missing one fails the build before
	// any step runs.
	triggers := map[*stagePlan][]instructions.Command{}
	for _, sp := range p.stages {
		if !sp.needed {
			continue
		}
		r.total += 1 + len(sp.stage.Commands)
		if sp.from != nil {
			// The base stage's ONBUILD instructions are its triggers.
			for _, c := range sp.from.stage.Commands {
				if _, ok := c.(*instructions.OnbuildCommand); ok {
					r.total++
				}
			}
			continue
		}
		if strings.EqualFold(sp.base, "scratch") {
			continue
		}
		base, err := r.resolveImage(ctx, sp.base)
		if err != nil {
			return v1.Hash{}, located(file, sp.stage.Location, err)
		}
		if triggers[sp], err = parseTriggers(base.cfg.Config.OnBuild); err != nil {
			return v1.Hash{}, located(file, sp.stage.Location, fmt.Errorf("ONBUILD trigger of %s: %w", sp.base, err))
		}
		r.total += len(triggers[sp])
	}

	// Steps that ran are cached even when a later one fails.
	defer func() {
		if err := b.cache.put(context.WithoutCancel(ctx), r.fresh); err != nil {
			fmt.Fprintf(r.errw, "[WARNING]: could not save the build cache: %v\n", err)
		}
	}()
	for _, sp := range p.stages {
		if !sp.needed {
			continue
		}
		st, err := r.buildStage(ctx, sp, triggers[sp])
		if err != nil {
			return v1.Hash{}, err
		}
		r.results[sp] = st
	}
	if unused := p.unusedBuildArgs(); len(unused) > 0 {
		fmt.Fprintf(r.errw, "[WARNING]: one or more build args were not consumed: %s\n", strings.Join(unused, ", "))
	}
	img, err := r.assemble(ctx, r.results[p.target])
	if err != nil {
		return v1.Hash{}, fmt.Errorf("assemble image: %w", err)
	}
	if len(opts.Tags) > 0 {
		fmt.Fprintf(r.out, "COMMIT %s\n", strings.Join(opts.Tags, " "))
	}
	id, err := b.images.Write(ctx, img, opts.Tags...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("store image: %w", err)
	}
	fmt.Fprintf(r.out, "--> %s\n", id.Hex[:12])
	for _, t := range opts.Tags {
		fmt.Fprintf(r.out, "Successfully tagged %s\n", t)
	}
	return id, nil
}

// parseTriggers parses a base image's ONBUILD triggers.
func parseTriggers(triggers []string) ([]instructions.Command, error) {
	var out []instructions.Command
	for _, t := range triggers {
		res, err := parser.Parse(strings.NewReader(t))
		if err != nil {
			return nil, err
		}
		for _, n := range res.AST.Children {
			c, err := instructions.ParseCommand(n)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// resolveImage finds ref in the image store (pulling it when asked to and
// possible).
func (r *run) resolveImage(ctx context.Context, ref string) (*baseImage, error) {
	if b, ok := r.bases[ref]; ok {
		return b, nil
	}
	puller, canPull := r.b.images.(Puller)
	if r.opts.Pull {
		if !canPull {
			return nil, fmt.Errorf("--pull %s: pulling images is not available in this berth yet; drop --pull to use the stored image: %w", ref, errdefs.ErrUnavailable)
		}
		if err := puller.Pull(ctx, ref, r.opts.Platform); err != nil {
			return nil, fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	img, err := r.b.images.Image(ctx, ref)
	if errdefs.IsNotFound(err) && canPull && !r.opts.Pull {
		if err := puller.Pull(ctx, ref, r.opts.Platform); err != nil {
			return nil, fmt.Errorf("pull %s: %w", ref, err)
		}
		img, err = r.b.images.Image(ctx, ref)
	}
	if errdefs.IsNotFound(err) && !canPull {
		return nil, fmt.Errorf("base image %q is not in berth's image store and pulling is not available yet (berth load or berth import it first): %w", ref, err)
	}
	if err != nil {
		return nil, fmt.Errorf("base image %s: %w", ref, err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("base image %s: %w", ref, err)
	}
	if b, ok := r.bases[id.String()]; ok {
		r.bases[ref] = b
		return b, nil
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("base image %s: %w", ref, err)
	}
	man, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("base image %s: %w", ref, err)
	}
	if len(man.Layers) != len(cfg.RootFS.DiffIDs) {
		return nil, fmt.Errorf("base image %s: %d layers, %d diff IDs: %w", ref, len(man.Layers), len(cfg.RootFS.DiffIDs), errdefs.ErrCorrupt)
	}
	if err := checkPlatform(cfg.OS + "/" + cfg.Architecture); err != nil && cfg.Architecture != "" {
		return nil, fmt.Errorf("base image %s: %w", ref, err)
	}
	b := &baseImage{ref: ref, id: id, img: img, cfg: cfg.DeepCopy()}
	for i, d := range man.Layers {
		b.layers = append(b.layers, layerRef{Digest: d.Digest, DiffID: cfg.RootFS.DiffIDs[i], Size: d.Size, MediaType: d.MediaType, Image: &b.id})
	}
	r.bases[ref], r.bases[id.String()] = b, b
	return b, nil
}

func (r *run) baseByID(ctx context.Context, id v1.Hash) (*baseImage, error) {
	return r.resolveImage(ctx, id.String())
}

// lowerDirs are the unpacked layers of st, bottom→top.
func (r *run) lowerDirs(ctx context.Context, st *stageState) ([]string, error) {
	dirs := make([]string, 0, len(st.layers))
	for _, l := range st.layers {
		if l.Image == nil {
			dirs = append(dirs, r.b.cache.layerDir(l.DiffID))
			continue
		}
		base, err := r.baseByID(ctx, *l.Image)
		if err != nil {
			return nil, err
		}
		if base.dirs == nil {
			ds, err := r.b.images.LayerDirs(ctx, base.id)
			if err != nil {
				return nil, fmt.Errorf("unpack base image %s: %w", base.ref, err)
			}
			if len(ds) != len(base.layers) {
				return nil, fmt.Errorf("base image %s: %d layer dirs for %d layers: %w", base.ref, len(ds), len(base.layers), errdefs.ErrCorrupt)
			}
			base.dirs = map[v1.Hash]string{}
			for i, bl := range base.layers {
				base.dirs[bl.DiffID] = ds[i]
			}
		}
		d, ok := base.dirs[l.DiffID]
		if !ok {
			return nil, fmt.Errorf("layer %s is not in base image %s: %w", l.DiffID, base.ref, errdefs.ErrNotFound)
		}
		dirs = append(dirs, d)
	}
	return dirs, nil
}

// defaultPathEnv is the PATH a stage from scratch gets, as with BuildKit.
const defaultPathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// scratchConfig is the config of an empty image for the host.
func scratchConfig() *v1.ConfigFile {
	os_, arch, variant := hostPlatform()
	return &v1.ConfigFile{
		OS: os_, Architecture: arch, Variant: variant, RootFS: v1.RootFS{Type: "layers"},
		Config: v1.Config{Env: []string{defaultPathEnv}},
	}
}

// buildStage runs one stage's steps.
func (r *run) buildStage(ctx context.Context, sp *stagePlan, triggers []instructions.Command) (*stageState, error) {
	r.step++
	from := "FROM " + sp.base
	if sp.stage.Name != "" {
		from += " AS " + sp.stage.Name
	}
	fmt.Fprintf(r.out, "STEP %d/%d: %s\n", r.step, r.total, from)
	var st *stageState
	switch {
	case sp.from != nil:
		st = r.results[sp.from].clone()
		var err error
		if triggers, err = parseTriggers(st.cfg.Config.OnBuild); err != nil {
			return nil, located(r.p.file, sp.stage.Location, fmt.Errorf("ONBUILD trigger of stage %s: %w", sp.from.name(), err))
		}
		st.cfg.Config.OnBuild = nil
	case strings.EqualFold(sp.base, "scratch"):
		st = &stageState{key: "scratch", args: newArgScope(), cfg: scratchConfig()}
	default:
		base, err := r.resolveImage(ctx, sp.base)
		if err != nil {
			return nil, err
		}
		st = &stageState{key: "image:" + base.id.String(), cfg: base.cfg.DeepCopy(), layers: append([]layerRef(nil), base.layers...), args: newArgScope()}
		st.cfg.Config.OnBuild = nil
	}
	if len(triggers) > 0 {
		fmt.Fprintf(r.out, "--> executing %d build trigger(s) of %s\n", len(triggers), sp.base)
	}
	cmds := append(append([]instructions.Command(nil), triggers...), sp.stage.Commands...)
	for _, c := range cmds {
		r.step++
		code := instructionText(c)
		fmt.Fprintf(r.out, "STEP %d/%d: %s\n", r.step, r.total, code)
		if err := r.dispatch(ctx, sp, st, c); err != nil {
			var se *StepError
			if errors.As(err, &se) {
				return nil, err
			}
			return nil, &StepError{Step: r.step, Total: r.total, Instruction: code, File: r.p.file, Line: startLine(c.Location()), Err: err}
		}
	}
	return st, nil
}

// instructionText is an instruction as written, on one line.
func instructionText(c instructions.Command) string {
	s := fmt.Sprint(c)
	if st, ok := c.(fmt.Stringer); ok {
		s = st.String()
	}
	s = strings.Join(strings.Fields(strings.ReplaceAll(s, "\\\n", " ")), " ")
	if len(s) > 200 {
		s = s[:197] + "..."
	}
	return s
}

// stepKey derives a step's cache key from its parent's and what the step
// depends on.
func stepKey(parent string, parts ...any) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", parent)
	for _, p := range parts {
		b, _ := json.Marshal(p)
		fmt.Fprintf(h, "%d:%s\n", len(b), b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// cached runs do unless the cache has the state after the step key; either
// way st ends as that state.
func (r *run) cached(ctx context.Context, st *stageState, key string, do func() error) error {
	if !r.opts.NoCache {
		e, err := r.b.cache.get(ctx, key)
		if err != nil {
			return err
		}
		if e != nil {
			cfg, err := configOf(e.Config)
			if err == nil {
				st.cfg, st.layers, st.key = cfg, e.Layers, key
				fmt.Fprintln(r.out, "--> CACHED")
				return nil
			}
		}
	}
	if err := do(); err != nil {
		return err
	}
	raw, err := json.Marshal(st.cfg)
	if err != nil {
		return err
	}
	st.key = key
	r.fresh[key] = &entry{Config: raw, Layers: append([]layerRef(nil), st.layers...)}
	return nil
}

// addHistory records a step in the config.
func (r *run) addHistory(st *stageState, createdBy string, emptyLayer bool) {
	now := v1.Time{Time: time.Now().UTC().Truncate(time.Microsecond)}
	st.cfg.Created = now
	st.cfg.History = append(st.cfg.History, v1.History{Created: now, CreatedBy: createdBy, EmptyLayer: emptyLayer, Comment: "berth build"})
}

// withSnapshot prepares a writable snapshot over st's layers, mounts it,
// calls fn with the mount point, unmounts it and, when fn succeeded, calls
// fix with the upper dir and adds the changes to st as a layer. It reports
// whether a layer was added. Nothing is left behind either way.
func (r *run) withSnapshot(ctx context.Context, st *stageState, fn func(rootfs string) error, fix func(upper string)) (bool, error) {
	lowers, err := r.lowerDirs(ctx, st)
	if err != nil {
		return false, err
	}
	key, mnt, cleanup, err := r.mount(ctx, lowers)
	if err != nil {
		return false, err
	}
	err = fn(mnt)
	if uerr := cleanup(false); err == nil {
		err = uerr
	}
	defer cleanup(true)
	if err != nil {
		return false, err
	}
	if fix != nil {
		fix(r.b.snaps.Upper(key))
	}
	l, ok, err := r.b.commitLayer(ctx, key)
	if err != nil || !ok {
		return false, err
	}
	st.layers = append(st.layers, l)
	return true, nil
}

// mount prepares and mounts a snapshot over lowers. cleanup(false)
// unmounts it; cleanup(true) also removes the snapshot and mount point.
func (r *run) mount(ctx context.Context, lowers []string) (key, mnt string, cleanup func(remove bool) error, err error) {
	// The mount point exists before the snapshot, so a sweep finds both.
	r.nextKey++
	key = fmt.Sprintf("build-%s-%d", strings.TrimPrefix(filepath.Base(r.dir), "run-"), r.nextKey)
	mnt = filepath.Join(r.dir, key)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return "", "", nil, err
	}
	mounts, err := r.b.snaps.Prepare(ctx, key, lowers)
	if err != nil {
		os.Remove(mnt)
		return "", "", nil, fmt.Errorf("prepare snapshot: %w", err)
	}
	if err := snapshot.MountAll(mounts, mnt); err != nil {
		os.Remove(mnt)
		_ = r.b.snaps.Remove(context.WithoutCancel(ctx), key)
		return "", "", nil, err
	}
	mounted := true
	cleanup = func(remove bool) error {
		var errs []error
		if mounted {
			errs = append(errs, snapshot.Unmount(mnt))
			mounted = false
		}
		if remove {
			errs = append(errs, os.Remove(mnt), r.b.snaps.Remove(context.WithoutCancel(ctx), key))
		}
		return errors.Join(errs...)
	}
	return key, mnt, cleanup, nil
}
