// Package integration drives the real berth binary as a user would. The tests
// need root, runc and busybox-static; they skip with a reason otherwise.
package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	berthBin string
	skipAll  string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	switch {
	case os.Geteuid() != 0:
		skipAll = "integration tests need root"
	case !exists("/bin/busybox"):
		skipAll = "integration tests need busybox-static (apt-get install busybox-static)"
	}
	if skipAll == "" {
		berthBin = os.Getenv("BERTH_BIN")
		if berthBin == "" {
			dir, err := os.MkdirTemp("", "berth-bin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			berthBin = filepath.Join(dir, "berth")
			// berth-agent (the microVM guest's PID 1) and berth-registry live beside berth.
			for _, b := range []string{"berth", "berth-agent", "berth-registry"} {
				build := exec.Command("go", "build", "-o", filepath.Join(dir, b), "../../cmd/"+b)
				build.Env = append(os.Environ(), "CGO_ENABLED=0")
				if out, err := build.CombinedOutput(); err != nil {
					fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b, err, out)
					return 1
				}
			}
		}
	}
	return m.Run()
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// env is one isolated berth installation (root and state dirs) for a test.
type env struct {
	t          *testing.T
	root, stat string
}

// newEnv makes an isolated berth for t and removes everything at the end,
// checking that nothing (mounts, runtime state) was left behind.
func newEnv(t *testing.T) *env {
	t.Helper()
	if skipAll != "" {
		t.Skip(skipAll)
	}
	base, err := os.MkdirTemp("", "berth-it-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, root: filepath.Join(base, "root"), stat: filepath.Join(base, "state")}
	t.Cleanup(func() {
		// Remove every workload, then check nothing of ours is mounted.
		out, _ := e.berth("ps", "-aq", "--no-trunc")
		for _, id := range strings.Fields(out) {
			e.berth("rm", "-f", id)
		}
		e.berth("system", "prune")
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(mounts), "\n") {
			if strings.Contains(line, base) {
				t.Errorf("leaked mount: %s", line)
				if f := strings.Fields(line); len(f) > 4 {
					exec.Command("umount", "-l", f[4]).Run()
				}
			}
		}
		os.RemoveAll(base)
	})
	return e
}

// berth runs the binary and returns stdout and an error carrying stderr
// and the exit code.
func (e *env) berth(args ...string) (string, error) {
	return e.berthIn(nil, args...)
}

func (e *env) berthIn(stdin io.Reader, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBin, args...)
	cmd.Env = append(os.Environ(), "BERTH_ROOT="+e.root, "BERTH_STATE="+e.stat, "BERTH_CONFIG=/nonexistent")
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), &runError{err: err, stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	}
	return stdout.String(), nil
}

type runError struct {
	err    error
	stderr string
	code   int
}

func (r *runError) Error() string { return fmt.Sprintf("%v (exit %d): %s", r.err, r.code, r.stderr) }

func exitCode(err error) int {
	if re, ok := err.(*runError); ok {
		return re.code
	}
	if err == nil {
		return 0
	}
	return -1
}

func stderrOf(err error) string {
	if re, ok := err.(*runError); ok {
		return re.stderr
	}
	return ""
}

// must runs berth and fails the test on error.
func (e *env) must(args ...string) string {
	e.t.Helper()
	out, err := e.berth(args...)
	if err != nil {
		e.t.Fatalf("berth %s: %v", strings.Join(args, " "), err)
	}
	return out
}

var (
	rootfsOnce sync.Once
	rootfsTar  []byte
	rootfsErr  error
)

// busyboxRootfs returns a tarball of a small root filesystem: busybox-static
// with its applets, /etc/passwd and /etc/group with a "nobody" and an "app"
// user, and the usual empty directories.
func busyboxRootfs(t *testing.T) []byte {
	t.Helper()
	rootfsOnce.Do(func() {
		bb, err := os.ReadFile("/bin/busybox")
		if err != nil {
			rootfsErr = err
			return
		}
		out, err := exec.Command("/bin/busybox", "--list").Output()
		if err != nil {
			rootfsErr = err
			return
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		now := time.Now()
		dir := func(name string, mode int64) {
			_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: now})
		}
		file := func(name string, mode int64, data []byte) {
			_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: now})
			_, _ = tw.Write(data)
		}
		for _, d := range []string{"bin", "etc", "dev", "proc", "sys", "tmp", "root", "home", "home/app", "var", "run"} {
			mode := int64(0o755)
			if d == "tmp" {
				mode = 0o1777
			}
			dir(d, mode)
		}
		file("bin/busybox", 0o755, bb)
		for _, applet := range strings.Fields(string(out)) {
			if applet == "busybox" {
				continue
			}
			_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: now})
		}
		file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
		file("etc/group", 0o644, []byte("root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n"))
		rootfsErr = tw.Close()
		rootfsTar = buf.Bytes()
	})
	if rootfsErr != nil {
		t.Fatalf("build busybox rootfs: %v", rootfsErr)
	}
	return rootfsTar
}

// importBusybox imports the busybox rootfs as image name.
func (e *env) importBusybox(name string) {
	e.t.Helper()
	p := filepath.Join(e.t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(p, busyboxRootfs(e.t), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.must("import", p, name)
}
