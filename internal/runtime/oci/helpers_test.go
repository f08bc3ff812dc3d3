package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/cgroups"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/spec"
)

// requiresRunc skips unless the test runs as root with runc and busybox.
func requiresRunc(t *testing.T) {
	t.Helper()
	requiresRuntime(t, "runc")
}

// requiresRuntime skips unless the test runs as root with the runtime binary
// and busybox.
func requiresRuntime(t *testing.T, binary string) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs containers; skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
	if _, err := exec.LookPath(binary); err != nil {
		t.Skipf("requires %s (apt-get install %s)", binary, binary)
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("requires /bin/busybox")
	}
}

var idSeq atomic.Int64

// cgroupParent holds this test binary's container cgroups; TestMain removes
// it at the end.
var cgroupParent = fmt.Sprintf("/berth-test-%d", os.Getpid())

func TestMain(m *testing.M) {
	code := m.Run()
	_ = cgroups.Remove(cgroupParent)
	// As a subreaper this process inherits the runtime's orphans; every one
	// must have been reaped.
	if z := zombies(); len(z) > 0 {
		fmt.Fprintf(os.Stderr, "zombie children left: %v\n", z)
		code = 1
	}
	os.Exit(code)
}

// zombies lists this process's children that are zombies.
func zombies() []string {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	var out []string
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, pid := range strings.Fields(string(b)) {
			stat, err := os.ReadFile("/proc/" + pid + "/stat")
			if err != nil {
				continue
			}
			// pid (comm) state ...
			if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
				out = append(out, pid+string(stat[strings.IndexByte(string(stat), ' '):i+1]))
			}
		}
	}
	return out
}

// fixture is one test container: its runtime, ID, bundle and cgroup.
type fixture struct {
	rt         *Runtime
	id         string
	bundle     string
	rootfs     string
	cgroupPath string
}

// newFixture builds a busybox rootfs in a temp dir and a runc runtime with
// its own state root; cleanup force-deletes the container and its cgroups.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, "runc")
}

// newFixtureWith is newFixture with the runtime binary given.
func newFixtureWith(t *testing.T, binary string) *fixture {
	t.Helper()
	requiresRuntime(t, binary)
	dir := t.TempDir()
	rt, err := New(binary, filepath.Join(dir, "state"), WithTempDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		rt:     rt,
		id:     fmt.Sprintf("berth-test-%d-%d", os.Getpid(), idSeq.Add(1)),
		bundle: filepath.Join(dir, "bundle"),
	}
	f.rootfs = filepath.Join(f.bundle, "rootfs")
	f.cgroupPath = cgroupParent + "/" + f.id
	buildBusybox(t, f.rootfs)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Delete(ctx, f.id, true); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = cgroups.Remove(f.cgroupPath)
	})
	return f
}

func buildBusybox(t *testing.T, rootfs string) {
	t.Helper()
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\nnobody:x:65534:\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(rootfs, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeSpec generates config.json for args with the fixture's defaults
// (rootfs, cgroup path, hostname) plus opts.
func (f *fixture) writeSpec(t *testing.T, args []string, opts ...spec.Opt) *specs.Spec {
	t.Helper()
	all := append([]spec.Opt{
		spec.WithRootfs(f.rootfs, false),
		spec.WithProcessArgs(args...),
		spec.WithCgroupsPath(f.cgroupPath),
		spec.WithHostname("berth"),
	}, opts...)
	s, err := spec.Generate(context.Background(), all...)
	if err != nil {
		t.Fatal(err)
	}
	f.rt.PrepareSpec(s) // as the engine does before writing a bundle
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// run creates and starts the container and waits for it to end.
func (f *fixture) run(t *testing.T, stdio runtime.IO) runtime.ExitStatus {
	t.Helper()
	p := f.start(t, stdio)
	return wait(t, p)
}

func (f *fixture) start(t *testing.T, stdio runtime.IO) runtime.Process {
	t.Helper()
	ctx := context.Background()
	p, err := f.rt.Create(ctx, f.id, f.bundle, stdio)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.rt.Start(ctx, f.id); err != nil {
		t.Fatal(err)
	}
	return p
}

func wait(t *testing.T, p runtime.Process) runtime.ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// syncBuffer is a bytes.Buffer safe for a copying goroutine and a reader.
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

// waitFor polls until cond holds, failing the test after a while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
