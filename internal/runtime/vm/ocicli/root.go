package ocicli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthdev/berth/internal/runtime/vm"
)

// globals are runc's global flags: podman passes --root, --log,
// --log-format and --systemd-cgroup; berth-vm adds its VM settings, which
// default from the environment so a runtime configured by path alone (as
// podman's --runtime is) can still be pointed at a kernel.
type globals struct {
	root, log, logFormat string
	systemdCgroup, debug bool
	kernelDir, agent     string
	accel, cacheDir      string
	bootTimeout          time.Duration
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// runtimeFor returns the VM runtime configured by g; notices go to notice.
func (g *globals) runtimeFor(notice io.Writer) (*vm.Runtime, error) {
	opts := []vm.Option{
		vm.WithStateDir(g.root), vm.WithKernelDir(g.kernelDir), vm.WithAccel(g.accel),
		vm.WithCacheDir(g.cacheDir), vm.WithBootTimeout(g.bootTimeout), vm.WithNotice(notice),
	}
	if g.agent != "" {
		opts = append(opts, vm.WithAgent(g.agent))
	}
	return vm.New(opts...)
}

// logError appends err to the --log file, in runc's JSON shape when
// --log-format json (conmon shows that message when the runtime fails).
func (g *globals) logError(err error) {
	if g.log == "" {
		return
	}
	f, ferr := os.OpenFile(g.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if ferr != nil {
		return
	}
	defer f.Close()
	if g.logFormat == "json" {
		b, _ := json.Marshal(map[string]string{"level": "error", "msg": err.Error(), "time": time.Now().UTC().Format(time.RFC3339Nano)})
		fmt.Fprintf(f, "%s\n", b)
		return
	}
	fmt.Fprintf(f, "%s level=error msg=%q\n", time.Now().UTC().Format(time.RFC3339), err.Error())
}

// logWriter is where a holder's notices go: the --log file, else nowhere
// (the holder's stderr is the workload's).
func (g *globals) logWriter() io.Writer {
	if g.log == "" {
		return io.Discard
	}
	f, err := os.OpenFile(g.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return io.Discard
	}
	return f
}

// exitError makes the command exit with Code and print nothing.
type exitError struct{ Code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ExitCode is the process exit status for the error Command returned: the
// workload's for exec, 1 for other errors, 0 for none.
func ExitCode(err error) int {
	var e *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return e.Code
	default:
		return 1
	}
}

// Command returns berth-vm's command tree.
func Command() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "berth-vm",
		Short:         "Run OCI bundles as QEMU microVMs (runc-compatible command line)",
		Version:       "0.1.0 (berth microVM runtime)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	f := root.PersistentFlags()
	f.StringVar(&g.root, "root", envOr("BERTH_VM_ROOT", "/run/berth-vm"), "state directory")
	f.StringVar(&g.log, "log", "", "log file for errors")
	f.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	f.BoolVar(&g.systemdCgroup, "systemd-cgroup", false, "ignored: a VM has no host cgroup of its own")
	f.BoolVar(&g.debug, "debug", false, "ignored")
	f.StringVar(&g.kernelDir, "kernel-dir", envOr("BERTH_KERNEL_DIR", vm.DefaultKernelDir), "guest kernel directory (hack/fetch-kernel.sh) [$BERTH_KERNEL_DIR]")
	f.StringVar(&g.agent, "agent", os.Getenv("BERTH_AGENT"), "berth-agent binary (default: beside this executable) [$BERTH_AGENT]")
	f.StringVar(&g.accel, "accel", envOr("BERTH_VM_ACCEL", "auto"), "accelerator: auto, kvm or tcg [$BERTH_VM_ACCEL]")
	f.StringVar(&g.cacheDir, "cache-dir", envOr("BERTH_VM_CACHE", vm.DefaultCacheDir), "initramfs and probe cache [$BERTH_VM_CACHE]")
	f.DurationVar(&g.bootTimeout, "boot-timeout", vm.DefaultBootTimeout, "limit on each boot")

	root.AddCommand(createCommand(g), startCommand(g), stateCommand(g), killCommand(g),
		deleteCommand(g), execCommand(g), holderCommand(g))
	for _, c := range root.Commands() {
		if run := c.RunE; run != nil {
			c.RunE = func(cmd *cobra.Command, args []string) error {
				err := run(cmd, args)
				var ee *exitError
				if err != nil && !errors.As(err, &ee) {
					g.logError(err)
					fmt.Fprintf(cmd.ErrOrStderr(), "berth-vm: %v\n", err)
				}
				return err
			}
		}
	}
	return root
}
