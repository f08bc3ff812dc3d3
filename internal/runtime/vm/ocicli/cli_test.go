package ocicli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/berthdev/berth/internal/runtime/vm"
	"github.com/berthdev/berth/internal/runtime/vm/vmtest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// These tests run the built berth-vm binary (with berth-agent beside it,
// as an installation has them) against real VMs; they need what the vm
// package's integration tests need, and skip with the reason otherwise.

func kernelDir() string { return vm.KernelDir() }

func requiresVM(t *testing.T) { t.Helper(); vmtest.RequireVM(t, vm.KernelDir()) }

// buildCLI builds berth-vm and berth-agent into one directory.
func buildCLI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []struct{ name, pkg, cgo string }{
		{"berth-vm", "github.com/berthdev/berth/cmd/berth-vm", "1"},
		{"berth-agent", "github.com/berthdev/berth/cmd/berth-agent", "0"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.name), b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b.name, err, out)
		}
	}
	return filepath.Join(dir, "berth-vm")
}

func cacheDir() string { return testCache }

// testCache holds this test binary's initramfs images and KVM probe result;
// TestMain removes it.
var testCache = filepath.Join(os.TempDir(), fmt.Sprintf("berth-vm-test-cache-%d", os.Getpid()))

func TestMain(m *testing.M) {
	code := m.Run()
	os.RemoveAll(testCache)
	os.Exit(code)
}

func makeRootfs(t *testing.T, dir string, applets ...string) {
	t.Helper()
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "bin/busybox"), b, 0o755)
	for _, a := range applets {
		os.Symlink("busybox", filepath.Join(dir, "bin", a))
	}
}

func leftovers(marker string) []string {
	var out []string
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, marker) && (strings.Contains(cmd, "qemu-system") || strings.Contains(cmd, "virtiofsd") || strings.Contains(cmd, "berth-vm")) {
			out = append(out, filepath.Base(filepath.Dir(p))+": "+cmd)
		}
	}
	return out
}

// TestCLI drives berth-vm with a bundle the way conmon does: create (with
// stdio pipes), state, start, exec, kill, and waits on the holder as a
// subreaper for the workload's exit code.
func TestCLI(t *testing.T) {
	requiresVM(t)
	bin := buildCLI(t)
	root, err := os.MkdirTemp("", "bvmcli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) }) // after the deletes below: cleanups run last-in first-out
	bundle := t.TempDir()
	makeRootfs(t, filepath.Join(bundle, "rootfs"), "sh", "echo", "cat", "sleep")
	spec := specs.Spec{
		Version: specs.Version, Root: &specs.Root{Path: "rootfs"}, Hostname: "cli",
		Process: &specs.Process{Args: []string{"sh", "-c", "read x; echo got:$x; echo oops >&2; trap 'exit 42' TERM; sleep 100 & wait"},
			Env: []string{"PATH=/bin"}, Cwd: "/"},
		Annotations: map[string]string{"org.example": "yes"},
	}
	b, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644)
	id := fmt.Sprintf("clitest%d", os.Getpid())
	berth := func(args ...string) *exec.Cmd {
		return exec.Command(bin, append([]string{"--root", root, "--kernel-dir", kernelDir(), "--cache-dir", cacheDir(), "--accel", "tcg"}, args...)...)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := berth(args...).CombinedOutput()
		if err != nil {
			t.Fatalf("berth-vm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		berth("delete", "--force", id).Run()
		if l := leftovers(id); len(l) > 0 {
			t.Errorf("left running:\n%s", strings.Join(l, "\n"))
		}
	})
	// Orphaned holders become our children, so we can collect their exit code.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

	stdinR, stdinW, _ := os.Pipe()
	var stdout, stderr bytes.Buffer
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	pidFile := filepath.Join(t.TempDir(), "pid")
	create := berth("create", "--bundle", bundle, "--pid-file", pidFile, id)
	create.Stdin, create.Stdout, create.Stderr = stdinR, outW, errW
	start := time.Now()
	if err := create.Run(); err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Logf("create took %s", time.Since(start))
	stdinR.Close()
	outW.Close()
	errW.Close()
	done := make(chan struct{})
	go func() { stdout.ReadFrom(outR); close(done) }()
	errDone := make(chan struct{})
	go func() { stderr.ReadFrom(errR); close(errDone) }()
	pb, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var holder int
	fmt.Sscan(string(pb), &holder)

	var st struct {
		specs.State
		Created string `json:"created"`
	}
	json.Unmarshal([]byte(run("state", id)), &st)
	if st.Status != specs.StateCreated || st.Pid != holder || st.Bundle != bundle || st.Annotations["org.example"] != "yes" {
		t.Errorf("state after create = %+v (holder %d)", st, holder)
	}
	run("start", id)
	json.Unmarshal([]byte(run("state", id)), &st)
	if st.Status != specs.StateRunning {
		t.Errorf("state after start = %s", st.Status)
	}
	stdinW.Write([]byte("hi\n"))
	stdinW.Close()

	out := run("exec", id, "sh", "-c", "echo from-exec")
	if out != "from-exec\n" {
		t.Errorf("exec output %q", out)
	}
	if err := berth("exec", id, "sh", "-c", "exit 6").Run(); err == nil || err.(*exec.ExitError).ExitCode() != 6 {
		t.Errorf("exec exit = %v, want 6", err)
	}
	if err := berth("delete", id).Run(); err == nil {
		t.Error("delete of a running VM without --force succeeded")
	}
	run("kill", id, "TERM")
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(holder, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
	if ws.ExitStatus() != 42 {
		t.Errorf("holder exit = %v, want the workload's 42", ws)
	}
	<-done
	<-errDone
	if stdout.String() != "got:hi\n" || stderr.String() != "oops\n" {
		t.Errorf("workload stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	json.Unmarshal([]byte(run("state", id)), &st)
	if st.Status != specs.StateStopped {
		t.Errorf("state after exit = %s", st.Status)
	}
	run("delete", id)
	if out, err := berth("state", id).CombinedOutput(); err == nil {
		t.Errorf("state after delete: %s", out)
	}
	if out, err := berth("delete", id).CombinedOutput(); err == nil || !strings.Contains(string(out), "does not exist") {
		t.Errorf("second delete = %v: %s", err, out)
	}
}

// TestPodman runs a container through podman with berth-vm as its runtime.
func TestPodman(t *testing.T) {
	requiresVM(t)
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman is not installed")
	}
	bin := buildCLI(t)
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "berth-vm-wrapper")
	// podman runs the runtime by path only; the wrapper adds the kernel.
	script := fmt.Sprintf("#!/bin/sh\nexec %s --kernel-dir %s --cache-dir %s \"$@\"\n", bin, kernelDir(), cacheDir())
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	makeRootfs(t, rootfs, "sh", "echo", "uname")
	image := fmt.Sprintf("localhost/berth-vm-test-%d:latest", os.Getpid())
	tar := filepath.Join(dir, "rootfs.tar")
	if out, err := exec.Command("tar", "-C", rootfs, "-cf", tar, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	if out, err := exec.Command(podman, "import", tar, image).CombinedOutput(); err != nil {
		t.Fatalf("podman import: %v\n%s", err, out)
	}
	defer exec.Command(podman, "rmi", "-f", image).Run()
	cidFile := filepath.Join(dir, "cid")
	args := []string{"--runtime", wrapper, "run", "--rm", "--cidfile", cidFile, "--network", "none", "--cgroup-manager", "cgroupfs",
		"--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768", image, "sh", "-c", "echo hi; uname -r; exit 3"}
	start := time.Now()
	out, err := exec.Command(podman, args...).Output()
	t.Logf("podman run took %s", time.Since(start))
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	if err == nil {
		t.Errorf("podman run exit 0, want 3")
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || lines[0] != "hi" || !strings.Contains(lines[1], "cloud-amd64") {
		t.Errorf("podman run output %q", out)
	}
	cid, _ := os.ReadFile(cidFile)
	if len(cid) < 12 {
		t.Fatalf("no container ID in %s", cidFile)
	}
	if l := leftovers(string(cid)); len(l) > 0 {
		t.Errorf("left running:\n%s", strings.Join(l, "\n"))
	}
}

// TestCLIUnhappyEnds: a signal before start ends the VM with 128+N; a
// SIGKILLed holder takes QEMU with it and delete still cleans up.
func TestCLIUnhappyEnds(t *testing.T) {
	requiresVM(t)
	bin := buildCLI(t)
	root, err := os.MkdirTemp("", "bvmcli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) }) // after the deletes below: cleanups run last-in first-out
	bundle := t.TempDir()
	makeRootfs(t, filepath.Join(bundle, "rootfs"), "sleep")
	b, _ := json.Marshal(specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Args: []string{"sleep", "100"}, Env: []string{"PATH=/bin"}, Cwd: "/"}})
	os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644)
	berth := func(args ...string) *exec.Cmd {
		return exec.Command(bin, append([]string{"--root", root, "--kernel-dir", kernelDir(), "--cache-dir", cacheDir(), "--accel", "tcg"}, args...)...)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	create := func(id string) int {
		t.Helper()
		pidFile := filepath.Join(t.TempDir(), "pid")
		// A file, not a pipe, for create's output: the holder keeps it.
		out, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		cmd := berth("create", "--bundle", bundle, "--pid-file", pidFile, id)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("create %s: %v\n%s", id, err, b)
		}
		pb, _ := os.ReadFile(pidFile)
		var pid int
		fmt.Sscan(string(pb), &pid)
		return pid
	}
	marker := fmt.Sprintf("cliend%d", os.Getpid())
	t.Cleanup(func() {
		berth("delete", "--force", marker+"-kill").Run()
		berth("delete", "--force", marker+"-orphan").Run()
		if l := leftovers(marker); len(l) > 0 {
			t.Errorf("left running:\n%s", strings.Join(l, "\n"))
		}
	})

	id := marker + "-kill"
	holder := create(id)
	if out, err := berth("kill", id, "KILL").CombinedOutput(); err != nil {
		t.Fatalf("kill before start: %v\n%s", err, out)
	}
	var ws syscall.WaitStatus
	syscall.Wait4(holder, &ws, 0, nil)
	if ws.ExitStatus() != 137 {
		t.Errorf("holder after kill before start = %v, want 137", ws)
	}
	if out, err := berth("delete", id).CombinedOutput(); err != nil {
		t.Errorf("delete: %v\n%s", err, out)
	}

	id = marker + "-orphan"
	holder = create(id)
	syscall.Kill(holder, syscall.SIGKILL)
	syscall.Wait4(holder, &ws, 0, nil)
	deadline := time.Now().Add(5 * time.Second)
	for len(leftovers(id)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if l := leftovers(id); len(l) > 0 {
		t.Errorf("QEMU/virtiofsd outlived their holder:\n%s", strings.Join(l, "\n"))
	}
	out, _ := berth("state", id).Output()
	if !strings.Contains(string(out), `"stopped"`) {
		t.Errorf("state after the holder died: %s", out)
	}
	if out, err := berth("delete", id).CombinedOutput(); err != nil {
		t.Errorf("delete after the holder died: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(root, id)); !os.IsNotExist(err) {
		t.Errorf("state dir left: %v", err)
	}
}
