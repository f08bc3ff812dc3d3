package cli

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/berthdev/berth/internal/attach"
	"github.com/berthdev/berth/internal/engine"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// createFlags are the flags shared by run and create.
type createFlags struct {
	name, workdir, user, entrypoint, hostname, memory, runtime, isolation string
	kernel, accel                                                         string
	env, envFiles, capAdd, capDrop, securityOpt, labels                   []string
	interactive, tty, readOnly, rm, vm                                    bool
	cpus                                                                  float64
	pidsLimit                                                             int64
	stopSignal, pull                                                      string
	stopTimeout                                                           int
	netVol                                                                netVolFlags // network.go
}

func (f *createFlags) register(fs *pflag.FlagSet) {
	fs.SetInterspersed(false)
	fs.StringVar(&f.name, "name", "", "assign a name to the container")
	fs.BoolVarP(&f.interactive, "interactive", "i", false, "keep STDIN open")
	fs.BoolVarP(&f.tty, "tty", "t", false, "allocate a pseudo-TTY")
	fs.BoolVar(&f.rm, "rm", false, "remove the container when it exits")
	fs.StringArrayVarP(&f.env, "env", "e", nil, "set environment variables (K=V, or K to take it from berth's environment)")
	fs.StringArrayVar(&f.envFiles, "env-file", nil, "read environment variables from a file")
	fs.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the container")
	fs.StringVarP(&f.user, "user", "u", "", "user[:group] to run as (name or id)")
	fs.StringVar(&f.entrypoint, "entrypoint", "", "override the image's entrypoint")
	fs.StringVarP(&f.hostname, "hostname", "h", "", "container host name")
	fs.BoolVar(&f.readOnly, "read-only", false, "mount the root filesystem read-only")
	fs.StringVarP(&f.memory, "memory", "m", "", "memory limit (e.g. 256m, 1g)")
	fs.Float64Var(&f.cpus, "cpus", 0, "number of CPUs (e.g. 0.5)")
	fs.Int64Var(&f.pidsLimit, "pids-limit", 0, "limit on the number of processes")
	fs.StringArrayVar(&f.capAdd, "cap-add", nil, "add Linux capabilities")
	fs.StringArrayVar(&f.capDrop, "cap-drop", nil, "drop Linux capabilities")
	fs.StringArrayVar(&f.securityOpt, "security-opt", nil, "no-new-privileges, seccomp=unconfined or seccomp=FILE")
	fs.StringArrayVarP(&f.labels, "label", "l", nil, "set metadata (K=V)")
	fs.StringVar(&f.runtime, "runtime", "", "OCI runtime: crun, runc or a path (default: probed, see berth info)")
	fs.StringVar(&f.isolation, "isolation", "container", "container or vm")
	fs.BoolVar(&f.vm, "vm", false, "short for --isolation=vm")
	fs.StringVar(&f.kernel, "kernel", "", "guest kernel for --isolation=vm")
	fs.StringVar(&f.accel, "accel", "", "microVM accelerator: kvm or tcg (default: probed)")
	fs.StringVar(&f.stopSignal, "stop-signal", "", "signal that stops the container (default SIGTERM)")
	fs.IntVar(&f.stopTimeout, "stop-timeout", 10, "seconds to wait for stop before killing")
	fs.StringVar(&f.pull, "pull", "missing", "pull the image: always, missing or never")
	f.netVol.register(fs)
	fs.Bool("help", false, "help for this command")
}

func (f *createFlags) config(img string, cmd []string, cmdFlags *pflag.FlagSet) (engine.ContainerConfig, error) {
	cfg := engine.ContainerConfig{
		Image: img, Cmd: cmd, WorkingDir: f.workdir, User: f.user, Hostname: f.hostname,
		Tty: f.tty, OpenStdin: f.interactive, ReadOnly: f.readOnly, AutoRemove: f.rm,
		CPUs: f.cpus, PidsLimit: f.pidsLimit, CapAdd: f.capAdd, CapDrop: f.capDrop,
		SecurityOpt: f.securityOpt, Runtime: f.runtime, Isolation: engine.Isolation(f.isolation),
		Kernel: f.kernel, Accel: f.accel, StopSignal: f.stopSignal, StopTimeout: f.stopTimeout,
	}
	if f.vm {
		cfg.Isolation = engine.IsolationVM
	}
	if cmdFlags.Changed("entrypoint") {
		cfg.EntrypointSet = true
		if f.entrypoint != "" {
			cfg.Entrypoint = []string{f.entrypoint}
		}
	}
	if f.memory != "" {
		n, err := units.RAMInBytes(f.memory)
		if err != nil || n <= 0 {
			return cfg, fmt.Errorf("invalid --memory %q: use a size like 256m or 1g: %w", f.memory, errdefs.ErrInvalidArgument)
		}
		cfg.Memory = n
	}
	if f.stopSignal != "" {
		if _, err := engine.ParseSignal(f.stopSignal); err != nil {
			return cfg, err
		}
	}
	for _, file := range f.envFiles {
		vars, err := readEnvFile(file)
		if err != nil {
			return cfg, err
		}
		cfg.Env = append(cfg.Env, vars...)
	}
	for _, kv := range f.env {
		if !strings.Contains(kv, "=") {
			if v, ok := os.LookupEnv(kv); ok {
				kv += "=" + v
			} else {
				continue
			}
		}
		cfg.Env = append(cfg.Env, kv)
	}
	if err := f.netVol.apply(&cfg); err != nil {
		return cfg, err
	}
	if len(f.labels) > 0 {
		cfg.Labels = map[string]string{}
		for _, l := range f.labels {
			k, v, _ := strings.Cut(l, "=")
			cfg.Labels[k] = v
		}
	}
	return cfg, nil
}

// readEnvFile reads K=V lines like Docker's --env-file: blank lines and
// #comments are skipped; a bare K takes berth's own environment's value.
func readEnvFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read env file: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, hasEq := strings.Cut(line, "=")
		if k == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("env file %s line %d: %q is not K=V: %w", path, n, line, errdefs.ErrInvalidArgument)
		}
		if !hasEq {
			if v, ok := os.LookupEnv(k); ok {
				out = append(out, k+"="+v)
			}
			continue
		}
		out = append(out, line)
	}
	return out, sc.Err()
}

func runCmd(g *globals) *cobra.Command {
	var f createFlags
	var detach bool
	cmd := &cobra.Command{
		Use:   "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Create and start a container or microVM",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cfg, err := f.config(args[0], args[1:], cmd.Flags())
			if err != nil {
				return withCode(125, err)
			}
			e, err := g.engine(ctx)
			if err != nil {
				return withCode(125, err)
			}
			if err := ensureImage(cmd, e, args[0], f.pull); err != nil {
				return withCode(125, err)
			}
			c, err := e.Create(ctx, engine.CreateOptions{Name: f.name, Config: cfg, Notice: cmd.ErrOrStderr()})
			if err != nil {
				return withCode(125, err)
			}
			if detach {
				if _, err := e.Start(ctx, c.ID, engine.StartOptions{}); err != nil {
					return startFailure(err)
				}
				fmt.Println(c.ID)
				return nil
			}
			code, err := startAttached(cmd, e, c.ID, f.interactive, f.tty)
			if err != nil {
				return err
			}
			if code != 0 {
				return withCode(code, nil)
			}
			return nil
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "run in the background and print the container ID")
	return cmd
}

// startAttached starts a workload with this terminal attached from its first
// byte of output and returns its exit code.
func startAttached(cmd *cobra.Command, e *engine.Engine, id string, stdin, tty bool) (int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, withCode(125, fmt.Errorf("create attach socket: %w", err))
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "attach"), os.NewFile(uintptr(fds[1]), "attach-monitor")
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		theirs.Close()
		return 0, withCode(125, err)
	}
	defer conn.Close()
	w, h := termSize()
	if err := attach.WriteJSONLine(conn, attach.Request{Op: attach.OpAttach, Stdin: stdin, Width: w, Height: h}); err != nil {
		theirs.Close()
		return 0, withCode(125, err)
	}
	_, err = e.Start(cmd.Context(), id, engine.StartOptions{Attach: theirs})
	theirs.Close()
	if err != nil {
		return 0, startFailure(err)
	}
	var rep attach.Reply
	if err := attach.ReadJSONLine(conn, &rep); err != nil {
		return 0, withCode(125, fmt.Errorf("attach: %w", err))
	}
	if rep.Error != "" {
		// The workload ended before we were served: report its recorded status.
		code, err := e.Wait(cmd.Context(), id)
		if err != nil {
			return 0, withCode(125, err)
		}
		return code, nil
	}
	code, err := stream(conn, stdin, tty)
	if err != nil {
		return code, withCode(max(code, 125), err)
	}
	return code, nil
}

func startFailure(err error) error {
	var se *engine.StartError
	if errors.As(err, &se) {
		return withCode(se.Code, err)
	}
	return withCode(125, err)
}

func createCmd(g *globals) *cobra.Command {
	var f createFlags
	cmd := &cobra.Command{
		Use:   "create [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Create a container or microVM without starting it",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cfg, err := f.config(args[0], args[1:], cmd.Flags())
			if err != nil {
				return withCode(125, err)
			}
			e, err := g.engine(ctx)
			if err != nil {
				return withCode(125, err)
			}
			if err := ensureImage(cmd, e, args[0], f.pull); err != nil {
				return withCode(125, err)
			}
			c, err := e.Create(ctx, engine.CreateOptions{Name: f.name, Config: cfg, Notice: cmd.ErrOrStderr()})
			if err != nil {
				return withCode(125, err)
			}
			fmt.Println(c.ID)
			return nil
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// ensureImage applies --pull before a workload is created, with progress on
// stderr as `docker run` shows it.
func ensureImage(cmd *cobra.Command, e *engine.Engine, ref, policy string) error {
	f := registryFlags{tlsVerify: true}
	o, done := f.options()
	defer done()
	return e.EnsureImage(cmd.Context(), ref, engine.PullPolicy(policy), o)
}
