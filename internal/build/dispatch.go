package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"

	"github.com/berthdev/berth/internal/errdefs"
)

// defaultShell runs shell-form RUN, CMD and ENTRYPOINT.
var defaultShell = []string{"/bin/sh", "-c"}

// env is what variables in instructions expand from: ARGs, then ENV.
func (st *stageState) env() shell.EnvGetter {
	return shell.EnvsFromSlice(append(st.args.env(), st.cfg.Config.Env...))
}

func (r *run) expander(st *stageState) instructions.SingleWordExpander {
	env := st.env()
	return func(word string) (string, error) {
		s, _, err := r.p.lex.ProcessWord(word, env)
		return s, err
	}
}

// dispatch runs one instruction on st.
func (r *run) dispatch(ctx context.Context, sp *stagePlan, st *stageState, c instructions.Command) error {
	if ex, ok := c.(instructions.SupportsSingleWordExpansion); ok {
		if err := ex.Expand(r.expander(st)); err != nil {
			return err
		}
	}
	if ex, ok := c.(instructions.SupportsSingleWordExpansionRaw); ok {
		// Heredoc contents: variables expand, quotes stay as written.
		env := st.env()
		lex := shell.NewLex('\\')
		lex.SkipProcessQuotes = true
		err := ex.ExpandRaw(func(word string) (string, error) {
			s, _, err := lex.ProcessWord(word, env)
			return s, err
		})
		if err != nil {
			return err
		}
	}
	switch c := c.(type) {
	case *instructions.ArgCommand:
		for _, kv := range c.Args {
			if err := r.p.declareArg(st.args, nil, kv, c.Location()); err != nil {
				return err
			}
		}
		return nil
	case *instructions.RunCommand:
		return r.runStep(ctx, st, c)
	case *instructions.CopyCommand:
		return r.copyStep(ctx, sp, st, copyRequest{
			kind: "COPY", text: c.String(), from: c.From, sad: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod,
			excludes: c.ExcludePatterns, parents: c.Parents,
		})
	case *instructions.AddCommand:
		if c.Checksum != "" || c.KeepGitDir != nil {
			return fmt.Errorf("ADD --checksum and --keep-git-dir need remote sources, which berth build cannot fetch: %w", errdefs.ErrUnavailable)
		}
		return r.copyStep(ctx, sp, st, copyRequest{
			kind: "ADD", text: c.String(), sad: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod,
			excludes: c.ExcludePatterns, add: true, noUnpack: c.Unpack != nil && !*c.Unpack,
		})
	case *instructions.WorkdirCommand:
		return r.workdirStep(ctx, st, c)
	}
	// Everything else only changes the config.
	mutate, err := r.configChange(st, c)
	if err != nil {
		return err
	}
	key := stepKey(st.key, fmt.Sprintf("%T", c), c)
	return r.cached(ctx, st, key, func() error {
		if err := mutate(st.cfg); err != nil {
			return err
		}
		r.addHistory(st, instructionText(c), true)
		return nil
	})
}

// configChange returns how a config-only instruction changes the config.
// It also updates what only the build tracks (whether CMD was set).
func (r *run) configChange(st *stageState, c instructions.Command) (func(*v1.ConfigFile) error, error) {
	switch c := c.(type) {
	case *instructions.EnvCommand:
		return func(cfg *v1.ConfigFile) error {
			for _, kv := range c.Env {
				cfg.Config.Env = setEnv(cfg.Config.Env, kv.Key, kv.Value)
			}
			return nil
		}, nil
	case *instructions.LabelCommand:
		return func(cfg *v1.ConfigFile) error {
			if cfg.Config.Labels == nil {
				cfg.Config.Labels = map[string]string{}
			}
			for _, kv := range c.Labels {
				cfg.Config.Labels[kv.Key] = kv.Value
			}
			return nil
		}, nil
	case *instructions.MaintainerCommand:
		return func(cfg *v1.ConfigFile) error { cfg.Author = c.Maintainer; return nil }, nil
	case *instructions.CmdCommand:
		st.cmdSet = true
		args, err := commandLine(c.ShellDependantCmdLine, st.cfg.Config.Shell)
		if err != nil {
			return nil, err
		}
		return func(cfg *v1.ConfigFile) error {
			cfg.Config.Cmd = args
			cfg.Config.ArgsEscaped = false
			return nil
		}, nil
	case *instructions.EntrypointCommand:
		args, err := commandLine(c.ShellDependantCmdLine, st.cfg.Config.Shell)
		if err != nil {
			return nil, err
		}
		keepCmd := st.cmdSet
		return func(cfg *v1.ConfigFile) error {
			cfg.Config.Entrypoint = args
			if !keepCmd {
				cfg.Config.Cmd = nil
			}
			return nil
		}, nil
	case *instructions.ExposeCommand:
		var ports []string
		for _, p := range c.Ports {
			words, err := r.p.lex.ProcessWords(p, st.env())
			if err != nil {
				return nil, err
			}
			for _, w := range words {
				ps, err := exposedPorts(w)
				if err != nil {
					return nil, err
				}
				ports = append(ports, ps...)
			}
		}
		return func(cfg *v1.ConfigFile) error {
			if cfg.Config.ExposedPorts == nil {
				cfg.Config.ExposedPorts = map[string]struct{}{}
			}
			for _, p := range ports {
				cfg.Config.ExposedPorts[p] = struct{}{}
			}
			return nil
		}, nil
	case *instructions.UserCommand:
		return func(cfg *v1.ConfigFile) error { cfg.Config.User = c.User; return nil }, nil
	case *instructions.VolumeCommand:
		return func(cfg *v1.ConfigFile) error {
			if cfg.Config.Volumes == nil {
				cfg.Config.Volumes = map[string]struct{}{}
			}
			for _, v := range c.Volumes {
				if v == "" {
					return fmt.Errorf("VOLUME: empty path: %w", errdefs.ErrInvalidArgument)
				}
				cfg.Config.Volumes[v] = struct{}{}
			}
			return nil
		}, nil
	case *instructions.StopSignalCommand:
		if c.Signal == "" {
			return nil, fmt.Errorf("STOPSIGNAL: empty signal: %w", errdefs.ErrInvalidArgument)
		}
		return func(cfg *v1.ConfigFile) error { cfg.Config.StopSignal = c.Signal; return nil }, nil
	case *instructions.HealthCheckCommand:
		return func(cfg *v1.ConfigFile) error {
			h := c.Health
			cfg.Config.Healthcheck = &v1.HealthConfig{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
			return nil
		}, nil
	case *instructions.ShellCommand:
		return func(cfg *v1.ConfigFile) error { cfg.Config.Shell = append([]string(nil), c.Shell...); return nil }, nil
	case *instructions.OnbuildCommand:
		return func(cfg *v1.ConfigFile) error {
			cfg.Config.OnBuild = append(cfg.Config.OnBuild, strings.TrimSpace(c.Expression))
			return nil
		}, nil
	}
	return nil, fmt.Errorf("%s is not supported by berth build: %w", strings.ToUpper(c.Name()), errdefs.ErrInvalidArgument)
}

// setEnv sets key in a KEY=VALUE list, in place of an earlier value.
func setEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != key {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}

// mergeEnv is base with over applied, later keys replacing earlier ones.
func mergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range over {
		k, v, _ := strings.Cut(kv, "=")
		out = setEnv(out, k, v)
	}
	return out
}

// commandLine is the argv of a RUN, CMD or ENTRYPOINT: exec form as
// written, shell form run by the shell (SHELL, else /bin/sh -c). A
// shell-form heredoc alone is the shell's script.
func commandLine(cl instructions.ShellDependantCmdLine, sh []string) ([]string, error) {
	if !cl.PrependShell {
		if len(cl.Files) > 0 {
			return nil, fmt.Errorf("heredocs need the shell form: %w", errdefs.ErrInvalidArgument)
		}
		return cl.CmdLine, nil
	}
	if len(sh) == 0 {
		sh = defaultShell
	}
	script := strings.Join(cl.CmdLine, " ")
	if len(cl.Files) > 0 {
		hd := parser.MustParseHeredoc(strings.TrimSpace(script))
		if len(cl.Files) != 1 || hd == nil {
			return nil, fmt.Errorf("only a command that is a single heredoc is supported: %w", errdefs.ErrInvalidArgument)
		}
		script = cl.Files[0].Data
		if cl.Files[0].Chomp {
			script = parser.ChompHeredocContent(script)
		}
	}
	return append(append([]string(nil), sh...), script), nil
}

// exposedPorts expands "80", "80/udp" or "8000-8002/tcp".
func exposedPorts(spec string) ([]string, error) {
	ports, proto, ok := strings.Cut(spec, "/")
	if !ok || proto == "" {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return nil, fmt.Errorf("EXPOSE %s: unknown protocol %q: %w", spec, proto, errdefs.ErrInvalidArgument)
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	first, err := strconv.Atoi(lo)
	last := first
	if err == nil && isRange {
		last, err = strconv.Atoi(hi)
	}
	if err != nil || first < 0 || last > 65535 || last < first {
		return nil, fmt.Errorf("EXPOSE %s: invalid port: %w", spec, errdefs.ErrInvalidArgument)
	}
	var out []string
	for p := first; p <= last; p++ {
		out = append(out, fmt.Sprintf("%d/%s", p, proto))
	}
	return out, nil
}

// workdir resolves a WORKDIR or relative COPY destination against the
// current working directory.
func workdir(st *stageState, p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	cur := st.cfg.Config.WorkingDir
	if cur == "" {
		cur = "/"
	}
	return path.Join(cur, p)
}

// workdirStep sets the working directory and creates it, owned by USER
// (as BuildKit), when it does not exist; only then is there a layer.
func (r *run) workdirStep(ctx context.Context, st *stageState, c *instructions.WorkdirCommand) error {
	dir := workdir(st, c.Path)
	user := st.cfg.Config.User
	key := stepKey(st.key, "WORKDIR", dir, user)
	return r.cached(ctx, st, key, func() error {
		st.cfg.Config.WorkingDir = dir
		added, err := r.withSnapshot(ctx, st, func(rootfs string) error {
			return mkdirAs(rootfs, dir, user)
		}, nil)
		if err != nil {
			return err
		}
		r.addHistory(st, "WORKDIR "+dir, !added)
		return nil
	})
}

// mkdirAs creates dir (and missing parents) in rootfs, owned by user
// (resolved in rootfs; root when empty or unknown).
func mkdirAs(rootfs, dir, user string) error {
	own := &owner{}
	if user != "" {
		u, g, _ := strings.Cut(user, ":")
		uid, err := lookupID(rootfs, "/etc/passwd", u)
		if err == nil {
			gid := primaryGID(rootfs, u, uid)
			if g != "" {
				if n, err := lookupID(rootfs, "/etc/group", g); err == nil {
					gid = n
				}
			}
			own = &owner{uid, gid}
		}
	}
	cp := &copier{chown: own}
	_, err := cp.mkdirAll(rootfs, dir)
	return err
}

// primaryGID is a user's group from /etc/passwd, or uid when unknown.
func primaryGID(rootfs, user string, uid int) int {
	p, err := securejoin.SecureJoin(rootfs, "/etc/passwd")
	if err != nil {
		return uid
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return uid
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 4 && (f[0] == user || f[2] == user) {
			if n, err := strconv.Atoi(f[3]); err == nil {
				return n
			}
		}
	}
	return uid
}

// mountPoints are the directories the runtime mounts over and creates when
// missing; a RUN step must not leave them in its layer.
var mountPoints = []string{"proc", "dev", "sys"}

// runStep runs a RUN instruction in a container.
func (r *run) runStep(ctx context.Context, st *stageState, c *instructions.RunCommand) error {
	for _, f := range c.FlagsUsed {
		switch f {
		case "network":
			if n := instructions.GetNetwork(c); n != instructions.NetworkDefault && n != instructions.NetworkNone {
				return fmt.Errorf("RUN --network=%s: builds have no network here; use none or default: %w", n, errdefs.ErrInvalidArgument)
			}
		default:
			return fmt.Errorf("RUN --%s is not supported by berth build: %w", f, errdefs.ErrInvalidArgument)
		}
	}
	args, err := commandLine(c.ShellDependantCmdLine, st.cfg.Config.Shell)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		return fmt.Errorf("RUN: no command: %w", errdefs.ErrInvalidArgument)
	}
	env := mergeEnv(st.args.env(), st.cfg.Config.Env)
	cwd := st.cfg.Config.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	user := st.cfg.Config.User
	key := stepKey(st.key, "RUN", args, env, cwd, user)
	// Proxy settings reach the command but neither the key nor the image.
	runEnv := env
	for k, v := range r.opts.BuildArgs {
		if proxyArgs[k] {
			runEnv = setEnv(runEnv, k, v)
		}
	}
	createdBy := "RUN " + strings.Join(args, " ")
	if a := st.args.env(); len(a) > 0 {
		createdBy = fmt.Sprintf("RUN |%d %s %s", len(a), strings.Join(a, " "), strings.Join(args, " "))
	}
	return r.cached(ctx, st, key, func() error {
		created := map[string]bool{}
		var code int
		added, err := r.withSnapshot(ctx, st, func(rootfs string) error {
			for _, m := range mountPoints {
				if _, err := os.Lstat(filepath.Join(rootfs, m)); err != nil {
					created[m] = true
				}
			}
			if err := mkdirAs(rootfs, cwd, ""); err != nil {
				return fmt.Errorf("create working directory %s: %w", cwd, err)
			}
			var err error
			code, err = r.b.exec.Run(ctx, RunRequest{Rootfs: rootfs, Args: args, Env: runEnv, Cwd: cwd, User: user, Stdout: r.out, Stderr: r.errw})
			if err != nil {
				return err
			}
			if code != 0 {
				return fmt.Errorf("%w: exit code %d", errExit, code)
			}
			return nil
		}, func(upper string) {
			for m := range created {
				_ = os.Remove(filepath.Join(upper, m)) // only when empty
			}
		})
		if err != nil {
			if code != 0 {
				return &StepError{Step: r.step, Total: r.total, Instruction: instructionText(c), File: r.p.file, Line: startLine(c.Location()), ExitCode: code, Err: err}
			}
			return err
		}
		r.addHistory(st, createdBy, !added)
		return nil
	})
}

// copyRequest is a COPY or ADD.
type copyRequest struct {
	kind, text string
	from       string
	sad        instructions.SourcesAndDest
	chown      string
	chmod      string
	excludes   []string
	parents    bool
	add        bool
	noUnpack   bool
}

func isURL(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://") || strings.HasPrefix(l, "git@") || strings.HasPrefix(l, "git://")
}

// copyStep runs a COPY or ADD.
func (r *run) copyStep(ctx context.Context, sp *stagePlan, st *stageState, q copyRequest) error {
	if q.parents {
		return fmt.Errorf("%s --parents is not supported by berth build: %w", q.kind, errdefs.ErrInvalidArgument)
	}
	for _, s := range q.sad.SourcePaths {
		if isURL(s) {
			return fmt.Errorf("%s %s: remote sources cannot be fetched: berth build works offline; download it into the build context and COPY it: %w", q.kind, s, errdefs.ErrUnavailable)
		}
	}
	chmod, err := parseChmod(q.chmod)
	if err != nil {
		return err
	}
	cp := &copier{add: q.add, noUnpack: q.noUnpack, chmod: chmod}
	if len(q.excludes) > 0 {
		if cp.exclude, err = patternmatcher.New(q.excludes); err != nil {
			return fmt.Errorf("--exclude: %w: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	// Where the sources come from, and what identifies their content.
	var (
		srcState *stageState
		srcID    string
	)
	if q.from != "" {
		from, _, err := r.p.lex.ProcessWord(q.from, st.env())
		if err != nil {
			return err
		}
		if dep := r.p.stageRef(from, sp.index); dep != nil {
			srcState = r.results[dep]
			if srcState == nil {
				return fmt.Errorf("--from=%s: stage not built: %w", from, errdefs.ErrInvalidArgument)
			}
		} else {
			base, err := r.resolveImage(ctx, from)
			if err != nil {
				return fmt.Errorf("--from=%s: %w", from, err)
			}
			srcState = &stageState{key: "image:" + base.id.String(), cfg: base.cfg, layers: base.layers}
		}
		srcID = "state:" + srcState.key
	} else {
		cp.srcRoot, cp.ignore, cp.fromContext = r.bctx.dir, r.bctx.ignore, true
		srcs, err := cp.match(q.sad.SourcePaths)
		if err != nil {
			return err
		}
		h := sha256.New()
		if err := cp.hash(h, srcs); err != nil {
			return err
		}
		srcID = "content:" + hex.EncodeToString(h.Sum(nil))
	}
	dest := q.sad.DestPath
	destDir := strings.HasSuffix(dest, "/") || strings.HasSuffix(dest, "/.") || dest == "." || dest == ""
	dest = workdir(st, dest)
	key := stepKey(st.key, q.kind, q.sad, dest, destDir, q.chown, q.chmod, q.excludes, q.noUnpack, srcID)
	return r.cached(ctx, st, key, func() error {
		if srcState != nil {
			lowers, err := r.lowerDirs(ctx, srcState)
			if err != nil {
				return err
			}
			_, mnt, cleanup, err := r.mount(ctx, lowers)
			if err != nil {
				return err
			}
			defer cleanup(true)
			cp.srcRoot = mnt
		}
		added, err := r.withSnapshot(ctx, st, func(rootfs string) error {
			if cp.chown, err = resolveChown(rootfs, q.chown); err != nil {
				return err
			}
			srcs, err := cp.match(q.sad.SourcePaths)
			if err != nil {
				return err
			}
			if len(srcs)+len(q.sad.SourceContents) > 1 && !destDir {
				return fmt.Errorf("when using %s with more than one source file, the destination must be a directory and end with a /: %w", q.kind, errdefs.ErrInvalidArgument)
			}
			if err := cp.copyTo(rootfs, srcs, dest, destDir); err != nil {
				return err
			}
			for _, sc := range q.sad.SourceContents {
				target := dest
				if destDir || isDirIn(rootfs, dest) {
					target = path.Join(dest, sc.Path)
				}
				if err := cp.writeContent(rootfs, target, []byte(sc.Data)); err != nil {
					return err
				}
			}
			return nil
		}, nil)
		if err != nil {
			return err
		}
		r.addHistory(st, q.text, !added)
		return nil
	})
}

var _ fs.FileInfo = inlineInfo{}
