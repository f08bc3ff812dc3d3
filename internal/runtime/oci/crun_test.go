package oci

import (
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/cgroups"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/spec"
)

func requiresHybrid(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
	if m := cgroups.DetectMode(); m != cgroups.Hybrid {
		t.Skipf("cgroups are %v here, not hybrid", m)
	}
}

// mountTable is this process's mount table without mount IDs' order.
func mountTable(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	// Only mounts this test could have caused: under its temp dirs, the
	// cgroup tree, or named by it. Other packages' tests run in parallel
	// and mount their own things.
	testRoot := filepath.Dir(t.TempDir())
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.Contains(l, testRoot) || strings.Contains(l, "/sys/fs/cgroup") || strings.Contains(l, " leak ") || strings.Contains(l, "berth-test") {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return lines
}

// threadMountNS lists the mount namespaces of this process's threads.
func threadMountNS(t *testing.T) []string {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, task := range tasks {
		if ns, err := os.Readlink(task); err == nil && !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out
}

// checkNoMountLeak fails the test if, at its end, the host's mount table or
// the mount namespace of any thread of this process differs from now.
func checkNoMountLeak(t *testing.T) {
	t.Helper()
	before, nsBefore := mountTable(t), threadMountNS(t)
	t.Cleanup(func() {
		if after := mountTable(t); !slices.Equal(before, after) {
			t.Errorf("host mount table changed:\nbefore %q\nafter  %q", before, after)
		}
		// Threads that ran a runtime end as their goroutine returns.
		deadline := time.Now().Add(2 * time.Second)
		for ns := threadMountNS(t); !slices.Equal(ns, nsBefore); ns = threadMountNS(t) {
			if time.Now().After(deadline) {
				t.Errorf("threads' mount namespaces %v, before %v", ns, nsBefore)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestV1View checks the namespace a runtime gets on a hybrid host: no
// cgroup2 mount, the v1 hierarchies, and every mount the caller made before
// the call, with nothing leaking back.
func TestV1View(t *testing.T) {
	requiresHybrid(t)
	checkNoMountLeak(t)
	dir := t.TempDir()
	if err := unix.Mount("berth-test", dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(dir, "marker"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The child also mounts something: it must not reach the host.
	script := "cat " + dir + "/marker; echo; mount -t tmpfs leak " + dir + " && cat /proc/self/mountinfo"
	for i := range 3 { // a fresh namespace each time
		cmd := exec.Command("/bin/sh", "-c", script)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := runInV1View(cmd); err != nil {
			t.Fatalf("%v: %s", err, out.String())
		}
		o := out.String()
		if !strings.HasPrefix(o, "ok\n") {
			t.Errorf("run %d: the caller's earlier mount is not visible: %q", i, o)
		}
		if strings.Contains(o, " "+unifiedMount+" ") || !strings.Contains(o, " /sys/fs/cgroup/memory ") {
			t.Errorf("run %d: mounts in the view:\n%s", i, o)
		}
	}
	if cgroups.DetectMode() != cgroups.Hybrid {
		t.Error("the host's cgroup2 mount is gone")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "marker")); err != nil || string(b) != "ok" {
		t.Errorf("the child's mount reached the host: %q %v", b, err)
	}
}

// TestCrun runs crun through the backend: on a hybrid host this exercises
// the cgroup v1 view for run, exec, kill, state and delete.
func TestCrun(t *testing.T) {
	requiresRuntime(t, "crun")
	checkNoMountLeak(t)
	t.Run("ExitCodeAndStdio", func(t *testing.T) {
		t.Parallel()
		f := newFixtureWith(t, "crun")
		f.writeSpec(t, []string{"sh", "-c", "echo out; cat; echo err >&2; exit 3"})
		var stdout, stderr syncBuffer
		st := f.run(t, runtime.IO{Stdin: strings.NewReader("in\n"), Stdout: &stdout, Stderr: &stderr})
		if st.Code != 3 || stdout.String() != "out\nin\n" || stderr.String() != "err\n" {
			t.Errorf("status %+v stdout %q stderr %q", st, stdout.String(), stderr.String())
		}
	})
	t.Run("StartError", func(t *testing.T) {
		t.Parallel()
		f := newFixtureWith(t, "crun")
		f.writeSpec(t, []string{"/nosuch"})
		ctx := context.Background()
		p, err := f.rt.Create(ctx, f.id, f.bundle, runtime.IO{})
		if err != nil {
			t.Fatal(err)
		}
		err = f.rt.Start(ctx, f.id)
		if err == nil || !strings.Contains(err.Error(), "nosuch") {
			t.Errorf("start: %v", err)
		}
		if _, err := p.Wait(ctx); err == nil {
			t.Error("wait after a failed start succeeded")
		}
	})
	t.Run("ExecKillDelete", func(t *testing.T) {
		t.Parallel()
		f := newFixtureWith(t, "crun")
		ctx := context.Background()
		s := f.writeSpec(t, []string{"sleep", "100"}, spec.WithMemoryLimit(64<<20), spec.WithPidsLimit(50))
		initProc := f.start(t, runtime.IO{})
		st, err := f.rt.State(ctx, f.id)
		if err != nil || st.Status != runtime.StatusRunning || st.Pid != initProc.Pid() {
			t.Errorf("state %+v %v, init pid %d", st, err, initProc.Pid())
		}

		// In the v1 cgroups, with the limits, seen from inside and out.
		proc := *s.Process
		proc.Args = []string{"sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; exit 4"}
		var stdout, stderr syncBuffer
		p, err := f.rt.Exec(ctx, f.id, "e1", &proc, runtime.IO{Stdout: &stdout, Stderr: &stderr})
		if err != nil {
			t.Fatal(err)
		}
		if es := wait(t, p); es.Code != 4 || stdout.String() != "67108864\n50\n" {
			t.Errorf("exec: %+v stdout %q stderr %q", es, stdout.String(), stderr.String())
		}
		cs, err := cgroups.ReadStats(f.cgroupPath)
		if err != nil || cs.MemoryLimit != 64<<20 || cs.PidsLimit != 50 || cs.Pids == 0 {
			t.Errorf("host view of the cgroup: %+v %v", cs, err)
		}
		pids, err := cgroups.Procs(f.cgroupPath)
		if err != nil || !slices.Contains(pids, initProc.Pid()) {
			t.Errorf("cgroup procs %v %v, init %d", pids, err, initProc.Pid())
		}
		// With a terminal. crun 1.8.1 may start the process before the
		// backend has sized the terminal (spec consoleSize notwithstanding),
		// and stty then fails: give it a moment.
		proc.Args = []string{"sh", "-c", "sleep 0.2; stty size"}
		var tout syncBuffer
		p, err = f.rt.Exec(ctx, f.id, "e2", &proc, runtime.IO{Terminal: true, Stdout: &tout, Size: &runtime.ConsoleSize{Width: 90, Height: 30}})
		if err != nil {
			t.Fatal(err)
		}
		if es := wait(t, p); es.Code != 0 || strings.TrimSpace(tout.String()) != "30 90" {
			t.Errorf("terminal exec: %+v %q", es, tout.String())
		}

		if err := f.rt.Delete(ctx, f.id, false); !errdefs.IsConflict(err) {
			t.Errorf("delete running without force: %v", err)
		}
		if err := f.rt.Kill(ctx, f.id, syscall.SIGKILL, true); err != nil {
			t.Fatal(err)
		}
		if es := wait(t, initProc); es.Code != 137 || es.Signal != syscall.SIGKILL {
			t.Errorf("init status %+v, want 137 by SIGKILL", es)
		}
		if st, err := f.rt.State(ctx, f.id); err != nil || st.Status != runtime.StatusStopped {
			t.Errorf("after kill: %+v %v", st, err)
		}
		if err := f.rt.Delete(ctx, f.id, false); err != nil {
			t.Fatal(err)
		}
		// Delete removed the runtime's state and every v1 cgroup.
		if _, err := f.rt.State(ctx, f.id); !errdefs.IsNotFound(err) {
			t.Errorf("state after delete: %v", err)
		}
		if _, err := os.Stat(filepath.Join(f.rt.root, f.id)); !os.IsNotExist(err) {
			t.Errorf("runtime state dir after delete: %v", err)
		}
		for _, c := range []string{"memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio"} {
			if _, err := os.Stat(filepath.Join(cgroups.DefaultRoot, c, f.cgroupPath)); !os.IsNotExist(err) {
				t.Errorf("%s cgroup after delete: %v", c, err)
			}
		}
		if err := f.rt.Kill(ctx, f.id, syscall.SIGKILL, false); !errdefs.IsNotFound(err) {
			t.Errorf("kill after delete: %v", err)
		}
	})
	t.Run("ForceDelete", func(t *testing.T) {
		t.Parallel()
		f := newFixtureWith(t, "crun")
		ctx := context.Background()
		f.writeSpec(t, []string{"sleep", "100"})
		p := f.start(t, runtime.IO{})
		if err := f.rt.Delete(ctx, f.id, true); err != nil {
			t.Fatal(err)
		}
		if es := wait(t, p); es.Signal != syscall.SIGKILL {
			t.Errorf("status %+v", es)
		}
		if _, err := os.Stat(filepath.Join(cgroups.DefaultRoot, "memory", f.cgroupPath)); !os.IsNotExist(err) {
			t.Errorf("memory cgroup after delete: %v", err)
		}
	})
}

// TestSeccompFilterCache: the first crun start of a profile learns the
// filter crun compiles for it; the next start passes it precompiled, and
// the filter installed is byte for byte the one crun compiled itself.
func TestSeccompFilterCache(t *testing.T) {
	f := newFixtureWith(t, "crun")
	checkNoMountLeak(t)
	ctx := context.Background()
	f.writeSpec(t, []string{"sh", "-c", "grep Seccomp /proc/self/status"}, spec.WithSeccomp(""))
	var out syncBuffer
	if st := f.run(t, runtime.IO{Stdout: &out}); st.Code != 0 {
		t.Fatalf("first run: exit %d: %s", st.Code, out.String())
	}
	if !strings.Contains(out.String(), "Seccomp:\t2") {
		t.Fatalf("first run not under seccomp: %q", out.String())
	}
	entries, _ := filepath.Glob(filepath.Join(f.rt.bpfDir(), "*"))
	if len(entries) != 1 {
		t.Fatalf("cache after the first run: %v, want one filter", entries)
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/berth/berth-seccomp-*"); len(left) > 0 {
		t.Fatalf("capture cgroups left: %v", left)
	}
	cached, err := os.ReadFile(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := f.rt.Delete(ctx, f.id, true); err != nil {
		t.Fatal(err)
	}

	// Second start: the bundle gets the annotation, crun accepts it and the
	// workload runs under one filter.
	out = syncBuffer{}
	f.writeSpec(t, []string{"sh", "-c", "grep Seccomp /proc/self/status"}, spec.WithSeccomp(""))
	if st := f.run(t, runtime.IO{Stdout: &out}); st.Code != 0 || !strings.Contains(out.String(), "Seccomp:\t2") || !strings.Contains(out.String(), "Seccomp_filters:\t1") {
		t.Fatalf("second run: exit %d: %q", st.Code, out.String())
	}
	cfg, _ := os.ReadFile(filepath.Join(f.bundle, "config.json"))
	if !strings.Contains(string(cfg), bpfAnnotation) {
		t.Fatal("second start: no precompiled filter in config.json")
	}
	// The filter crun installs from the annotation is byte for byte the one
	// it compiled: read it from a created (never started) container of the
	// annotated bundle, whose init nobody else waits for.
	id := f.id + "-verify"
	cmd := exec.Command(f.rt.binary, f.rt.globalArgs(filepath.Join(t.TempDir(), "log"), []string{"create", "--bundle", f.bundle, id})...)
	if err := f.rt.runCmd(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.rt.PruneCaptures(ctx); f.rt.Delete(ctx, id, true); f.rt.reapLeftovers() })
	st, err := f.rt.State(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	own(st.Pid)
	got, err := captureFilter(st.Pid)
	disown(st.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if base64.StdEncoding.EncodeToString(got) != string(cached) {
		t.Fatal("the installed filter differs from the one crun compiled")
	}
	if err := f.rt.Delete(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	f.rt.reapLeftovers()

	// No profile (seccomp=unconfined): nothing cached, nothing passed.
	if err := f.rt.Delete(ctx, f.id, true); err != nil {
		t.Fatal(err)
	}
	f.writeSpec(t, []string{"true"}, spec.WithSeccomp(spec.SeccompUnconfined))
	f.run(t, runtime.IO{})
	cfg, _ = os.ReadFile(filepath.Join(f.bundle, "config.json"))
	if strings.Contains(string(cfg), bpfAnnotation) {
		t.Fatal("unconfined: a filter was passed")
	}
}

// TestPruneCaptures: a capture interrupted by a SIGKILL leaves a created
// container and a bundle dir; PruneCaptures removes both.
func TestPruneCaptures(t *testing.T) {
	f := newFixtureWith(t, "crun")
	ctx := context.Background()
	f.writeSpec(t, []string{"true"})
	id := "berth-seccomp-interrupted"
	cmd := exec.Command(f.rt.binary, f.rt.globalArgs(filepath.Join(t.TempDir(), "log"), []string{"create", "--bundle", f.bundle, id})...)
	if err := f.rt.runCmd(cmd); err != nil {
		t.Fatal(err)
	}
	f.rt.reapLeftovers()
	capture := filepath.Join(f.rt.bpfDir(), "capture-123")
	if err := os.MkdirAll(capture, 0o700); err != nil {
		t.Fatal(err)
	}
	if got := f.rt.PruneCaptures(ctx); !slices.Equal(got, []string{id}) {
		t.Fatalf("PruneCaptures = %v", got)
	}
	if _, err := f.rt.State(ctx, id); !errdefs.IsNotFound(err) {
		t.Fatalf("state after prune: %v", err)
	}
	if _, err := os.Stat(capture); !os.IsNotExist(err) {
		t.Fatalf("capture dir left: %v", err)
	}
}
