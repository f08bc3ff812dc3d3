package vm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/berthdev/berth/internal/runtime/vm/vmtest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Integration tests boot real VMs: they need root, QEMU, virtiofsd,
// busybox-static and a guest kernel from hack/fetch-kernel.sh (in
// $BERTH_KERNEL_DIR, default /var/lib/berth/kernel). They skip with
// the reason when something is missing, and under -short.

var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if agentBin != "" {
		os.RemoveAll(filepath.Dir(agentBin))
	}
	os.RemoveAll(testCache) // nothing of the tests stays in /tmp
	os.Exit(code)
}

// testCache holds this test binary's initramfs images and KVM probe result.
var testCache = filepath.Join(os.TempDir(), fmt.Sprintf("berth-vm-test-cache-%d", os.Getpid()))

func testKernelDir() string { return KernelDir() }

// requiresVM skips t unless VMs can be booted here.
func requiresVM(t *testing.T) { t.Helper(); vmtest.RequireVM(t, KernelDir()) }

// testAgent builds berth-agent (static) once per test binary.
func testAgent(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-vm-test-bin-")
		if err != nil {
			agentErr = err
			return
		}
		agentBin = filepath.Join(dir, "berth-agent")
		cmd := exec.Command("go", "build", "-o", agentBin, "github.com/berthdev/berth/cmd/berth-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("build berth-agent: %v\n%s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentBin
}

// testCacheDir persists between runs so the initramfs and the KVM probe
// result are reused.
func testCacheDir() string { return testCache }

func newTestRuntime(t *testing.T, opts ...Option) *Runtime {
	t.Helper()
	state, err := os.MkdirTemp("", "bvm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	base := []Option{
		WithStateDir(state), WithCacheDir(testCacheDir()), WithKernelDir(testKernelDir()),
		WithAgent(testAgent(t)), WithBootTimeout(60 * time.Second), WithNotice(testWriter{t}),
	}
	r, err := New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var applets = []string{"sh", "echo", "cat", "sleep", "id", "pwd", "env", "uname", "ls", "head", "tail",
	"true", "false", "sort", "hostname", "test", "printf", "kill", "wc", "grep", "mkdir", "rm", "dd", "sync", "stty", "tty",
	"mount", "touch", "stat"}

// makeRootfs makes a busybox root filesystem in dir.
func makeRootfs(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc/group"), []byte("root:x:0:\nwheel:x:10:user\nuser:x:1000:\n"), 0o644)
}

// makeBundle writes a bundle whose config.json runs args in rootfs.
func makeBundle(t *testing.T, rootfs string, args []string, edit func(*specs.Spec)) string {
	t.Helper()
	bundle := t.TempDir()
	s := &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: rootfs},
		Hostname: "vmtest",
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/bin", "HOME=/root"},
			Cwd:  "/",
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/tmp/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}},
			{Destination: "/etc/hosts", Type: "bind", Source: "/etc/hosts", Options: []string{"rbind", "ro"}},
		},
		Linux: &specs.Linux{},
	}
	if edit != nil {
		edit(s)
	}
	b, _ := json.Marshal(s)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return bundle
}

// syncBuffer is a bytes.Buffer safe for a writer and a poller.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leftovers lists host processes whose command line mentions marker and
// which are QEMU or virtiofsd.
func leftovers(marker string) []string {
	var out []string
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, marker) && (strings.Contains(cmd, "qemu-system") || strings.Contains(cmd, "virtiofsd")) {
			out = append(out, filepath.Base(filepath.Dir(p))+": "+cmd)
		}
	}
	return out
}
