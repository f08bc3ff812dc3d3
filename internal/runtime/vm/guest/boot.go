package guest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PortName is the name of the virtio-serial port the host talks on.
const PortName = "org.berth.agent"

// ModuleOrder is the initramfs file listing the modules to load, one file
// name (relative to its directory) per line, dependencies first.
const ModuleOrder = "/lib/modules/order"

// HelperArg, as os.Args[1], makes the binary act as the exec helper that
// turns itself into a workload process (see helper.go).
const HelperArg = "__berth_exec"

// step is one named boot step; Main runs them in order and stops at the
// first error.
type step struct {
	name string
	fn   func(*agent) error
}

var bootSteps = []step{
	{"mount-early", (*agent).mountEarly},
	{"load-modules", (*agent).loadModules},
	{"open-port", (*agent).openPort},
}

// Main runs the agent, or the exec helper when invoked as one. It never
// returns as PID 1: the VM powers off.
func Main() {
	if len(os.Args) > 1 && os.Args[1] == HelperArg {
		helperMain()
		return
	}
	a := newAgent()
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "berth-agent: must run as PID 1 of a berth microVM")
		os.Exit(2)
	}
	for _, s := range bootSteps {
		if err := s.fn(a); err != nil {
			a.fatalf("boot step %s: %v", s.name, err)
		}
	}
	if cmdlineFlag("berth.probe") {
		logf("probe ok")
		powerOff()
	}
	a.serve()
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "berth-agent: "+format+"\n", args...)
}

// fatalf reports a boot failure on the console, tries to tell the host, and
// powers off: the host sees QEMU exit without Ready and shows the console.
func (a *agent) fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	logf("fatal: %s", msg)
	if a.w != nil {
		_ = a.sendError(0, errors.New(msg), false)
	}
	powerOff()
}

func powerOff() {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		logf("power off: %v", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}

func cmdlineFlag(name string) bool {
	b, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(b)) {
		if f == name || f == name+"=1" {
			return true
		}
	}
	return false
}

func (a *agent) mountEarly() error {
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.typ, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.typ, m.dst, err)
		}
	}
	// The kernel gave us /dev/console from the initramfs; reopen it from
	// devtmpfs in case the initramfs had none.
	if c, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		for fd := 0; fd <= 2; fd++ {
			_ = unix.Dup2(int(c.Fd()), fd)
		}
		c.Close()
	}
	return nil
}

func (a *agent) loadModules() error {
	f, err := os.Open(ModuleOrder)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		if err := loadModule(filepath.Join(filepath.Dir(ModuleOrder), name)); err != nil {
			return err
		}
	}
	return sc.Err()
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	return nil
}

// findPort returns the /dev path of the virtio-serial port named name,
// waiting for the driver to create it.
func findPort(name string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		matches, _ := filepath.Glob("/sys/class/virtio-ports/vport*/name")
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err == nil && string(bytes.TrimSpace(b)) == name {
				return "/dev/" + filepath.Base(filepath.Dir(m)), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("find virtio-serial port %q: not present after %s (is virtio_console loaded?)", name, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (a *agent) openPort() error {
	dev, err := findPort(PortName, 10*time.Second)
	if err != nil {
		return err
	}
	a.portPath = dev
	return a.reopenPort()
}
