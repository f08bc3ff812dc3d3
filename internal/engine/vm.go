package engine

import (
	"context"
	"os"
	"path/filepath"

	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/runtime/vm"
)

// vmOptions turns berth's settings (and a workload's --kernel/--accel) into
// the VM backend's options. A kernel setting may name a directory laid out
// like hack/fetch-kernel.sh's, or a kernel image (modules then come from the
// default kernel directory).
func (e *Engine) vmOptions(kernel, accel string) []vm.Option {
	if kernel == "" {
		kernel = e.cfg.Kernel
	}
	if accel == "" {
		accel = e.cfg.Accel
	}
	if accel == "" {
		accel = "auto"
	}
	opts := []vm.Option{
		vm.WithStateDir(filepath.Join(e.stateDir, "vm")),
		// The cache (initramfs per kernel, KVM probe result) is keyed by its
		// inputs, so every berth root on the host can share it.
		vm.WithCacheDir("/var/cache/berth/vm"),
		vm.WithKernelDir(vm.KernelDir()),
		vm.WithAccel(accel),
		vm.WithAgent(filepath.Join(filepath.Dir(e.exe), "berth-agent")),
		vm.WithNotice(nil),
	}
	if kernel != "" {
		if st, err := os.Stat(kernel); err == nil && st.IsDir() {
			opts = append(opts, vm.WithKernelDir(kernel))
		} else {
			opts = append(opts, vm.WithKernel(kernel))
		}
	}
	return opts
}

// vmBackend builds the microVM backend for a workload.
func (e *Engine) vmBackend(c *state.Container) (runtime.Runtime, error) {
	return vm.New(e.vmOptions(c.Config.Kernel, c.Config.Accel)...)
}

// VMAccelerator resolves the accelerator a new microVM with these settings
// would use ("kvm" or "tcg") and why; the KVM probe runs once per host and
// kernel and is cached.
func (e *Engine) VMAccelerator(ctx context.Context, kernel, accel string) (string, string, error) {
	rt, err := vm.New(e.vmOptions(kernel, accel)...)
	if err != nil {
		return "", "", err
	}
	return rt.Accelerator(ctx)
}

// vmInfo describes the microVM set-up for `berth info`.
func (e *Engine) vmInfo(ctx context.Context) [][2]string {
	k := e.cfg.Kernel
	if k == "" {
		k = vm.KernelDir()
	}
	out := [][2]string{{"VM Kernel", k}}
	accel, reason, err := e.VMAccelerator(ctx, "", "")
	if err != nil {
		return append(out, [2]string{"VM Accelerator", "unavailable: " + err.Error()})
	}
	return append(out, [2]string{"VM Accelerator", accel + " (" + reason + ")"})
}
