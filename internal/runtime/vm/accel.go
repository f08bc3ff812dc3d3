package vm

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// probeTimeout bounds the KVM probe boot; a working KVM boots the probe in
// well under a second.
const probeTimeout = 10 * time.Second

// selectAccel returns the accelerator for cfg: the option when it names one,
// else the cached result of a probe boot under KVM, else TCG. Falling back
// prints a one-line notice (once per Runtime).
func (r *Runtime) selectAccel(ctx context.Context, cfg VMConfig) string {
	if r.o.accel != "auto" {
		return r.o.accel
	}
	r.accelMu.Lock()
	defer r.accelMu.Unlock()
	if r.accel != "" {
		return r.accel
	}
	accel, reason := r.probeAccel(ctx, cfg)
	if accel == "tcg" {
		fmt.Fprintf(r.o.notice, "berth: KVM unusable (%s); running microVMs under TCG software emulation (slow)\n", reason)
	}
	r.accel = accel
	return accel
}

func (r *Runtime) probeAccel(ctx context.Context, cfg VMConfig) (accel, reason string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg", "cannot open /dev/kvm: " + err.Error()
	}
	f.Close()
	h := sha256.New()
	for _, p := range []string{cfg.QEMU, cfg.Kernel} { // KVM does not depend on the agent
		st, err := os.Stat(p)
		if err != nil {
			return "tcg", err.Error()
		}
		fmt.Fprintf(h, "%s %d %d\n", p, st.Size(), st.ModTime().UnixNano())
	}
	cache := filepath.Join(r.o.cacheDir, "accel-"+hex.EncodeToString(h.Sum(nil))[:16])
	if b, err := os.ReadFile(cache); err == nil {
		a, why, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		if a == "kvm" || a == "tcg" {
			return a, "cached probe result: " + why
		}
	}
	accel, reason = "kvm", "probe boot succeeded"
	if err := probeKVM(ctx, cfg); err != nil {
		accel, reason = "tcg", err.Error()
	}
	if err := os.MkdirAll(r.o.cacheDir, 0o755); err == nil {
		tmp := cache + ".tmp" + strconv.Itoa(os.Getpid())
		if os.WriteFile(tmp, []byte(accel+" "+reason+"\n"), 0o644) == nil {
			_ = os.Rename(tmp, cache)
		}
	}
	return accel, reason
}

// probeKVM boots the guest kernel under KVM with the agent in probe mode,
// which powers off at once.
func probeKVM(ctx context.Context, cfg VMConfig) error {
	dir, err := os.MkdirTemp("", "berth-kvm-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c := cfg
	c.ID, c.Accel, c.MemoryMiB, c.VCPUs, c.SharedDir = "kvm-probe", "kvm", MinMemoryMiB, 1, ""
	c.ExtraCmdline = []string{"berth.probe"}
	c.QMPSocket, c.AgentSocket = filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "agent.sock")
	c.ConsoleLog = filepath.Join(dir, "console.log")
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.QEMU, c.Args()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	console, _ := os.ReadFile(c.ConsoleLog)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("a KVM probe boot did not finish within %s", probeTimeout)
	case err != nil:
		return fmt.Errorf("a KVM probe boot failed: %v: %s", err, firstLine(string(out)))
	case !strings.Contains(string(console), "probe ok"):
		return fmt.Errorf("a KVM probe boot did not reach the agent")
	}
	return nil
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "warning") {
			continue
		}
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}

// hostTSCkHz reads the host's TSC frequency ("cpu MHz" × 1000), 0 if unknown.
func hostTSCkHz() int {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0
			}
			return int(mhz * 1000)
		}
	}
	return 0
}

// Accelerator says which accelerator this Runtime's VMs use and why: the
// option when it names one, else the (cached) result of a KVM probe boot.
// It fails when QEMU, the kernel or the agent are missing, with the package
// or command that provides them.
func (r *Runtime) Accelerator(ctx context.Context) (accel, reason string, err error) {
	m := &Machine{ID: "probe", rt: r}
	if err := m.validateHost(ctx); err != nil {
		return "", "", err
	}
	if r.o.accel != "auto" {
		return r.o.accel, "chosen by --accel or the config file", nil
	}
	accel, reason = r.probeAccel(ctx, m.Config)
	return accel, reason, nil
}
