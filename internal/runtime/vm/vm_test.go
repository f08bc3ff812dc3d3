package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
)

// overlay mounts a writable overlay of lower and returns its merged and
// upper directories; it is unmounted when the test ends.
func overlay(t *testing.T, lower string) (merged, upper string) {
	t.Helper()
	d := t.TempDir()
	merged, upper, work := filepath.Join(d, "merged"), filepath.Join(d, "upper"), filepath.Join(d, "work")
	for _, p := range []string{merged, upper, work} {
		os.Mkdir(p, 0o755)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := syscall.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(merged, syscall.MNT_DETACH) })
	return merged, upper
}

func rssMiB(t *testing.T, pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(v)[0])
			return kb / 1024
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}

// execOut runs args in VM id and returns its exit code and stdout, stderr.
func execOut(ctx context.Context, t *testing.T, r runtime.Runtime, id string, proc *specs.Process, stdio runtime.IO) (int, string, string) {
	t.Helper()
	var out, errb syncBuffer
	stdio.Stdout, stdio.Stderr = &out, &errb
	if proc.Env == nil {
		proc.Env = []string{"PATH=/bin"}
	}
	if proc.Cwd == "" {
		proc.Cwd = "/"
	}
	p, err := r.Exec(ctx, id, "exec-"+strconv.Itoa(int(time.Now().UnixNano()%1e6)), proc, stdio)
	if err != nil {
		t.Fatalf("exec %q: %v", proc.Args, err)
	}
	st, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("wait for exec %q: %v", proc.Args, err)
	}
	return st.Code, out.String(), errb.String()
}

// TestVM boots two VMs at once from one lower rootfs (an overlay each) and
// exercises one thing after another in them, to keep the number of boots low.
func TestVM(t *testing.T) {
	requiresVM(t)
	r := newTestRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	lower := t.TempDir()
	makeRootfs(t, lower)
	mergedA, _ := overlay(t, lower)
	mergedB, upperB := overlay(t, lower)
	marker := fmt.Sprintf("vmtest%d", os.Getpid())
	idA, idB := marker+"-a", marker+"-b"
	t.Cleanup(func() {
		r.Delete(context.Background(), idA, true)
		r.Delete(context.Background(), idB, true)
		if l := leftovers(marker); len(l) > 0 {
			t.Errorf("processes left running:\n%s", strings.Join(l, "\n"))
		}
	})

	mem := int64(128 << 20)
	bundleA := makeBundle(t, mergedA, []string{"sh", "-c", `read line; echo "got:$line"; echo to-stderr >&2; ` +
		`echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) cwd=$(pwd) foo=$FOO host=$(hostname)"; echo ready; exec sleep 1000`},
		func(s *specs.Spec) {
			s.Process.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10}}
			s.Process.Cwd = "/tmp"
			s.Process.Env = append(s.Process.Env, "FOO=bar")
			s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &mem}}
			// Without overcommit the hog's one big malloc fails before the OOM killer is needed.
			s.Linux.Sysctl = map[string]string{"vm.overcommit_memory": "1"}
		})
	pids := int64(20)
	bundleB := makeBundle(t, mergedB, []string{"sh", "-c", "echo b > /written-by-b && cat /written-by-b && exec sleep 1000"},
		func(s *specs.Spec) {
			s.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &pids}}
		})

	var outA, errA, outB syncBuffer
	var pA, pB runtime.Process
	var wg sync.WaitGroup
	var errCreateA, errCreateB error
	start := time.Now()
	wg.Add(2)
	go func() {
		defer wg.Done()
		pA, errCreateA = r.Create(ctx, idA, bundleA, runtime.IO{Stdin: strings.NewReader("hello\n"), Stdout: &outA, Stderr: &errA})
	}()
	go func() {
		defer wg.Done()
		pB, errCreateB = r.Create(ctx, idB, bundleB, runtime.IO{Stdout: &outB, Stderr: &outB})
	}()
	wg.Wait()
	if err := errors.Join(errCreateA, errCreateB); err != nil {
		t.Fatal(err)
	}
	t.Logf("two VMs created in %s", time.Since(start))
	if st, err := r.State(ctx, idA); err != nil || st.Status != runtime.StatusCreated || st.Pid != pA.Pid() || st.Pid == 0 {
		t.Fatalf("State before start = %+v, %v", st, err)
	}
	if err := r.Start(ctx, idA); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, idB); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, idA); !errdefs.IsConflict(err) {
		t.Errorf("second Start = %v, want a conflict", err)
	}

	t.Run("init stdio, env, cwd, user", func(t *testing.T) {
		waitFor(t, 30*time.Second, "init's output", func() bool { return strings.Contains(outA.String(), "ready") })
		want := []string{"got:hello", "uid=1000 gid=1000 groups=1000 10 cwd=/tmp foo=bar host=vmtest"}
		for _, w := range want {
			if !strings.Contains(outA.String(), w) {
				t.Errorf("init stdout %q lacks %q", outA.String(), w)
			}
		}
		if errA.String() != "to-stderr\n" {
			t.Errorf("init stderr = %q", errA.String())
		}
	})

	t.Run("exec streams and exit code", func(t *testing.T) {
		code, out, errs := execOut(ctx, t, r, idA, &specs.Process{Args: []string{"sh", "-c", "echo exec-out; echo exec-err >&2; exit 5"}}, runtime.IO{})
		if code != 5 || out != "exec-out\n" || errs != "exec-err\n" {
			t.Errorf("exec = %d, %q, %q", code, out, errs)
		}
		code, out, _ = execOut(ctx, t, r, idA, &specs.Process{Args: []string{"cat"}}, runtime.IO{Stdin: strings.NewReader("piped\n")})
		if code != 0 || out != "piped\n" {
			t.Errorf("exec cat = %d, %q", code, out)
		}
		code, out, _ = execOut(ctx, t, r, idA, &specs.Process{Args: []string{"sh", "-c", "stty size; tty"}}, runtime.IO{Terminal: true, Size: &runtime.ConsoleSize{Width: 80, Height: 24}})
		if code != 0 || !strings.Contains(out, "24 80") || !strings.Contains(out, "/dev/pts/") {
			t.Errorf("exec with terminal = %d, %q", code, out)
		}
		_, err := r.Exec(ctx, idA, "nope", &specs.Process{Args: []string{"no-such-binary"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, runtime.IO{})
		if !errdefs.IsNotFound(err) {
			t.Errorf("exec of a missing binary = %v, want not found", err)
		}
	})

	t.Run("guest kernel and PIDs", func(t *testing.T) {
		_, out, _ := execOut(ctx, t, r, idA, &specs.Process{Args: []string{"sh", "-c", "uname -r; cat /proc/1/comm; cat /proc/[0-9]*/cmdline | grep -c vm[.]test"}}, runtime.IO{})
		var u syscall.Utsname
		syscall.Uname(&u)
		host := strings.TrimRight(string(int8sToBytes(u.Release[:])), "\x00")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || lines[0] == host || !strings.Contains(lines[0], "cloud-amd64") {
			t.Errorf("guest uname -r = %q, host %q", out, host)
		}
		if len(lines) == 3 && (lines[1] != "init" || lines[2] != "0") {
			t.Errorf("guest PID 1 = %q, host test processes visible: %q", lines[1], lines[2])
		}
	})

	t.Run("memory hog meets the VM's RAM", func(t *testing.T) {
		code, _, errs := execOut(ctx, t, r, idA, &specs.Process{Args: []string{"tail", "-c", "400m", "/dev/zero"}}, runtime.IO{})
		if code != 137 {
			t.Errorf("memory hog exit = %d (%s), want 137 (OOM-killed)", code, errs)
		}
		if rss := rssMiB(t, pA.Pid()); rss > 128+256 {
			t.Errorf("QEMU RSS %d MiB for a 128 MiB guest", rss)
		} else {
			t.Logf("QEMU RSS after the hog: %d MiB", rss)
		}
		if code, out, _ := execOut(ctx, t, r, idA, &specs.Process{Args: []string{"echo", "alive"}}, runtime.IO{}); code != 0 || out != "alive\n" {
			t.Errorf("after the hog: %d %q", code, out)
		}
	})

	t.Run("another process drives the VM", func(t *testing.T) {
		r2, err := New(WithStateDir(filepath.Dir(r.Dir(idA))), WithCacheDir(testCacheDir()), WithKernelDir(testKernelDir()))
		if err != nil {
			t.Fatal(err)
		}
		if st, err := r2.State(ctx, idA); err != nil || st.Status != runtime.StatusRunning || st.Pid != pA.Pid() {
			t.Errorf("State from elsewhere = %+v, %v", st, err)
		}
		code, out, _ := execOut(ctx, t, r2, idA, &specs.Process{Args: []string{"sh", "-c", "read x; echo remote:$x; exit 4"}}, runtime.IO{Stdin: strings.NewReader("in\n")})
		if code != 4 || out != "remote:in\n" {
			t.Errorf("remote exec = %d, %q", code, out)
		}
		if err := r2.Delete(ctx, idA, false); !errdefs.IsConflict(err) {
			t.Errorf("Delete of a running VM without force = %v, want a conflict", err)
		}
	})

	t.Run("second VM: own writable layer, pids limit, SIGKILL", func(t *testing.T) {
		waitFor(t, 30*time.Second, "VM B's output", func() bool { return outB.String() == "b\n" })
		if _, err := os.Stat(filepath.Join(upperB, "written-by-b")); err != nil {
			t.Errorf("B's write is not in its upper dir: %v", err)
		}
		if _, err := os.Stat(filepath.Join(lower, "written-by-b")); err == nil {
			t.Error("B's write reached the shared lower dir")
		}
		if _, err := os.Stat(filepath.Join(mergedA, "written-by-b")); err == nil {
			t.Error("B's write is visible to A")
		}
		_, out, _ := execOut(ctx, t, r, idB, &specs.Process{Args: []string{"cat", "/sys/fs/cgroup/workload/pids.max"}}, runtime.IO{})
		if out != "20\n" {
			t.Errorf("pids.max in B = %q", out)
		}
		if err := r.Kill(ctx, idB, syscall.SIGKILL, false); err != nil {
			t.Fatal(err)
		}
		if st, err := pB.Wait(ctx); err != nil || st.Code != 137 || st.Signal != syscall.SIGKILL {
			t.Errorf("B after SIGKILL = %+v, %v", st, err)
		}
	})

	if err := r.Kill(ctx, idA, syscall.SIGTERM, false); err != nil {
		t.Fatal(err)
	}
	if st, err := pA.Wait(ctx); err != nil || st.Code != 143 {
		t.Errorf("A after SIGTERM = %+v, %v", st, err)
	}
	for _, id := range []string{idA, idB} {
		waitFor(t, 10*time.Second, "QEMU to power off", func() bool {
			st, _ := r.State(ctx, id)
			return st.Status == runtime.StatusStopped
		})
		if err := r.Delete(ctx, id, false); err != nil {
			t.Errorf("Delete %s: %v", id, err)
		}
		if _, err := r.State(ctx, id); !errdefs.IsNotFound(err) {
			t.Errorf("State after Delete = %v, want not found", err)
		}
		if err := r.Delete(ctx, id, false); err != nil {
			t.Errorf("second Delete %s: %v", id, err)
		}
	}
}

func int8sToBytes(s []int8) []byte {
	b := make([]byte, len(s))
	for i, c := range s {
		b[i] = byte(c)
	}
	return b
}

// TestBootFailures checks that a guest that never becomes ready is an error
// carrying the console, whether QEMU exits (panic=-1) or hangs (timeout),
// and that nothing is left behind.
func TestBootFailures(t *testing.T) {
	requiresVM(t)
	rootfs := t.TempDir()
	makeRootfs(t, rootfs)
	bundle := makeBundle(t, rootfs, []string{"true"}, nil)
	tests := []struct {
		name    string
		cmdline []string
		timeout time.Duration
		want    string
		is      error
	}{
		{"panic exits QEMU", []string{"rdinit=/nonexistent"}, 60 * time.Second, "QEMU exited", errdefs.ErrUnavailable},
		{"hang times out", []string{"rdinit=/nonexistent", "panic=0"}, 8 * time.Second, "timed out", context.DeadlineExceeded},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmdline := tt.cmdline
			r := newTestRuntime(t, WithAccel("tcg"), WithBootTimeout(tt.timeout), WithHandlers(func(h *Handlers) {
				h.Boot = h.Boot.Swap(Handler{QEMUHandler, func(ctx context.Context, m *Machine) error {
					m.Config.ExtraCmdline = cmdline
					return m.startQEMU(ctx)
				}})
			}))
			id := fmt.Sprintf("bootfail%d-%d", os.Getpid(), i)
			start := time.Now()
			_, err := r.Create(context.Background(), id, bundle, runtime.IO{})
			if err == nil {
				r.Delete(context.Background(), id, true)
				t.Fatal("Create succeeded")
			}
			t.Logf("failed after %s: %v", time.Since(start), err)
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "Kernel panic") || !errors.Is(err, tt.is) {
				t.Errorf("error lacks %q, the console's panic, or class %v", tt.want, tt.is)
			}
			if d := time.Since(start); d > tt.timeout+15*time.Second {
				t.Errorf("took %s", d)
			}
			if _, err := os.Stat(r.Dir(id)); !os.IsNotExist(err) {
				t.Errorf("state dir left: %v", err)
			}
			if l := leftovers(id); len(l) > 0 {
				t.Errorf("left running: %v", l)
			}
		})
	}
}

// TestMissingHostPieces needs no VM: the error names the Debian package.
func TestMissingHostPieces(t *testing.T) {
	rootfs := t.TempDir()
	bundle := makeBundle(t, rootfs, []string{"true"}, nil)
	empty := t.TempDir()
	tests := []struct {
		name string
		opts []Option
		want string
	}{
		{"kernel", []Option{WithKernelDir(empty)}, "linux-image-cloud-amd64"},
		{"qemu", []Option{WithQEMU("/nonexistent/qemu-system-x86_64")}, "qemu-system-x86"},
		{"virtiofsd", []Option{WithVirtiofsd("/nonexistent/virtiofsd")}, "qemu-system-common"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := append([]Option{WithStateDir(t.TempDir()), WithAgent("/bin/true"), WithKernelDir(testKernelDir())}, tt.opts...)
			if _, err := exec.LookPath("qemu-system-x86_64"); err != nil && tt.name != "qemu" {
				t.Skip("needs qemu-system-x86_64 to get past the QEMU check")
			}
			r, err := New(opts...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.Create(context.Background(), "missing", bundle, runtime.IO{})
			if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Create = %v, want unavailable naming %s", err, tt.want)
			}
		})
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, opt := range []Option{WithAccel("hvf"), WithMachineType("pc"), WithBootTimeout(0), WithDefaultMemory(16)} {
		if _, err := New(opt); !errdefs.IsInvalidArgument(err) {
			t.Errorf("New = %v, want invalid argument", err)
		}
	}
}
