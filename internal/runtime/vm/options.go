package vm

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/berthdev/berth/internal/errdefs"
)

// Option configures a Runtime.
type Option func(*options) error

type options struct {
	stateDir     string
	cacheDir     string
	kernelDir    string
	kernel       string
	agent        string
	accel        string
	machine      string
	qemu         string
	virtiofsd    string
	bootTimeout  time.Duration
	memoryMiB    int
	notice       io.Writer
	editHandlers []func(*Handlers)
}

// Defaults.
const (
	DefaultStateDir    = "/run/berth/vm"
	DefaultCacheDir    = "/var/cache/berth/vm"
	DefaultKernelDir   = "/var/lib/berth/kernel"
	DefaultBootTimeout = 30 * time.Second
	DefaultMemoryMiB   = 256
	// MinMemoryMiB is the least guest RAM berth gives a VM; the Debian
	// kernel with the initramfs needs about this much to boot reliably.
	MinMemoryMiB = 128
)

// WithStateDir sets where per-VM state directories live (sockets, console
// log, state.json). Default DefaultStateDir.
func WithStateDir(dir string) Option {
	return func(o *options) error { o.stateDir = dir; return nil }
}

// WithCacheDir sets where built initramfs images and the KVM probe's result
// are cached. Default DefaultCacheDir.
func WithCacheDir(dir string) Option {
	return func(o *options) error { o.cacheDir = dir; return nil }
}

// WithKernelDir sets the directory hack/fetch-kernel.sh filled: vmlinuz,
// modules/*.ko, version. Default DefaultKernelDir.
func WithKernelDir(dir string) Option {
	return func(o *options) error { o.kernelDir = dir; return nil }
}

// WithKernel boots this kernel image instead of the kernel directory's
// vmlinux/vmlinuz; the modules still come from the kernel directory. An
// empty path keeps the default.
func WithKernel(path string) Option {
	return func(o *options) error { o.kernel = path; return nil }
}

// WithAgent sets the static berth-agent binary. Default: berth-agent beside
// the running executable.
func WithAgent(path string) Option {
	return func(o *options) error { o.agent = path; return nil }
}

// WithAccel selects the accelerator: "auto" (default: KVM when a probe boot
// works, cached; else TCG with a notice), "kvm" or "tcg".
func WithAccel(accel string) Option {
	return func(o *options) error { o.accel = accel; return nil }
}

// WithMachineType selects QEMU's machine: "microvm" (default) or "q35".
func WithMachineType(m string) Option {
	return func(o *options) error { o.machine = m; return nil }
}

// WithQEMU sets the qemu-system-x86_64 binary. Default: found in PATH.
func WithQEMU(path string) Option {
	return func(o *options) error { o.qemu = path; return nil }
}

// WithVirtiofsd sets the virtiofsd binary. Default /usr/lib/qemu/virtiofsd.
func WithVirtiofsd(path string) Option {
	return func(o *options) error { o.virtiofsd = path; return nil }
}

// WithBootTimeout bounds each boot, from QEMU's start to the agent being
// ready. Default DefaultBootTimeout.
func WithBootTimeout(d time.Duration) Option {
	return func(o *options) error { o.bootTimeout = d; return nil }
}

// WithDefaultMemory sets the guest RAM in MiB when the bundle sets no
// memory limit. Default DefaultMemoryMiB.
func WithDefaultMemory(mib int) Option {
	return func(o *options) error { o.memoryMiB = mib; return nil }
}

// WithNotice sets where one-line notices go (the TCG fallback). Default
// os.Stderr; nil silences them.
func WithNotice(w io.Writer) Option {
	return func(o *options) error {
		if w == nil {
			w = io.Discard
		}
		o.notice = w
		return nil
	}
}

// WithHandlers lets the caller edit every VM's boot handlers (append a step,
// swap one out) before validation runs.
func WithHandlers(edit func(*Handlers)) Option {
	return func(o *options) error { o.editHandlers = append(o.editHandlers, edit); return nil }
}

func makeOptions(opts []Option) (options, error) {
	o := options{
		stateDir:    DefaultStateDir,
		cacheDir:    DefaultCacheDir,
		kernelDir:   DefaultKernelDir,
		accel:       "auto",
		machine:     "microvm",
		qemu:        "qemu-system-x86_64",
		virtiofsd:   "/usr/lib/qemu/virtiofsd",
		bootTimeout: DefaultBootTimeout,
		memoryMiB:   DefaultMemoryMiB,
		notice:      os.Stderr,
	}
	if exe, err := os.Executable(); err == nil {
		o.agent = filepath.Join(filepath.Dir(exe), "berth-agent")
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("vm runtime options: "+format+": %w", append(args, errdefs.ErrInvalidArgument)...)
	}
	switch o.accel {
	case "auto", "kvm", "tcg":
	default:
		return o, invalid("accel %q is not auto, kvm or tcg", o.accel)
	}
	switch o.machine {
	case "microvm", "q35":
	default:
		return o, invalid("machine type %q is not microvm or q35", o.machine)
	}
	if o.bootTimeout <= 0 {
		return o, invalid("boot timeout %s is not positive", o.bootTimeout)
	}
	if o.memoryMiB < MinMemoryMiB {
		return o, invalid("default memory %d MiB is below %d MiB", o.memoryMiB, MinMemoryMiB)
	}
	for _, d := range []*string{&o.stateDir, &o.cacheDir, &o.kernelDir} {
		if *d == "" {
			return o, invalid("empty directory")
		}
		abs, err := filepath.Abs(*d)
		if err != nil {
			return o, invalid("%v", err)
		}
		*d = abs
	}
	return o, nil
}

// KernelDir is where set-up put the guest kernel: $BERTH_KERNEL_DIR, else
// DefaultKernelDir. It is host-wide, like the QEMU binary, and does not
// follow berth's --root.
func KernelDir() string {
	if d := os.Getenv("BERTH_KERNEL_DIR"); d != "" {
		return d
	}
	return DefaultKernelDir
}
