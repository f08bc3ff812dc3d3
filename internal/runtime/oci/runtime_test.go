package oci

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/berthdev/berth/internal/cgroups"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/spec"
)

func TestNewMissingBinary(t *testing.T) {
	for _, bin := range []string{"/nonexistent/runc", "/nonexistent/crun"} {
		_, err := New(bin, t.TempDir())
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("err %v, want ErrUnavailable", err)
		}
		want := "apt-get install " + filepath.Base(bin)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.writeSpec(t, []string{"sh", "-c", "exit 3"})
	st := f.run(t, runtime.IO{})
	if st.Code != 3 || st.Signal != 0 || st.ExitedAt.IsZero() {
		t.Errorf("status %+v, want code 3", st)
	}
}

func TestKill(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	f.writeSpec(t, []string{"sleep", "100"})
	p, err := f.rt.Create(ctx, f.id, f.bundle, runtime.IO{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := f.rt.State(ctx, f.id); err != nil || st.Status != runtime.StatusCreated || p.Pid() != 0 {
		t.Errorf("before start: %+v %v pid %d", st, err, p.Pid())
	}
	if err := f.rt.Kill(ctx, f.id, syscall.SIGKILL, false); !errdefs.IsConflict(err) {
		t.Errorf("kill before start: %v", err)
	}
	if err := f.rt.Start(ctx, f.id); err != nil {
		t.Fatal(err)
	}
	st, err := f.rt.State(ctx, f.id)
	if err != nil || st.Status != runtime.StatusRunning || st.Pid != p.Pid() || st.Pid == 0 {
		t.Errorf("running: %+v %v, pid %d", st, err, p.Pid())
	}
	if err := f.rt.Delete(ctx, f.id, false); !errdefs.IsConflict(err) {
		t.Errorf("delete running without force: %v", err)
	}
	if err := f.rt.Kill(ctx, f.id, syscall.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	es := wait(t, p)
	if es.Code != 137 || es.Signal != syscall.SIGKILL {
		t.Errorf("status %+v, want 137 by SIGKILL", es)
	}
	if st, err := f.rt.State(ctx, f.id); err != nil || st.Status != runtime.StatusStopped {
		t.Errorf("after kill: %+v %v", st, err)
	}
	if err := p.Signal(ctx, syscall.SIGTERM); !errdefs.IsConflict(err) {
		t.Errorf("signal after exit: %v", err)
	}
	if err := f.rt.Delete(ctx, f.id, false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.rt.State(ctx, f.id); !errdefs.IsNotFound(err) {
		t.Errorf("state after delete: %v", err)
	}
	if err := f.rt.Delete(ctx, f.id, false); err != nil {
		t.Errorf("second delete: %v", err)
	}
	if err := f.rt.Kill(ctx, f.id, syscall.SIGKILL, false); !errdefs.IsNotFound(err) {
		t.Errorf("kill after delete: %v", err)
	}
}

func TestProcessSignal(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.writeSpec(t, []string{"sleep", "100"})
	p := f.start(t, runtime.IO{})
	if err := p.Signal(context.Background(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := wait(t, p); st.Code != 137 {
		t.Errorf("status %+v", st)
	}
}

func TestStdoutStderr(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.writeSpec(t, []string{"sh", "-c", "echo out; echo err >&2; echo out2"})
	var stdout, stderr syncBuffer
	st := f.run(t, runtime.IO{Stdout: &stdout, Stderr: &stderr})
	if st.Code != 0 || stdout.String() != "out\nout2\n" || stderr.String() != "err\n" {
		t.Errorf("status %+v stdout %q stderr %q", st, stdout.String(), stderr.String())
	}
}

func TestStdin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.writeSpec(t, []string{"cat"})
	var stdout syncBuffer
	in := strings.Repeat("hello berth\n", 10000) // more than a pipe buffer
	st := f.run(t, runtime.IO{Stdin: strings.NewReader(in), Stdout: &stdout})
	if st.Code != 0 || stdout.String() != in {
		t.Errorf("status %+v, %d bytes out, want %d", st, len(stdout.String()), len(in))
	}
}

func TestTerminal(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.writeSpec(t, []string{"sh", "-c", "stty size; tty; read x; stty size; exit 4"},
		spec.WithTTY(true), spec.WithConsoleSize(80, 24))
	var out syncBuffer
	inR, inW := io.Pipe()
	defer inW.Close()
	p := f.start(t, runtime.IO{Terminal: true, Stdin: inR, Stdout: &out, Size: &runtime.ConsoleSize{Width: 80, Height: 24}})
	waitFor(t, "first stty size", func() bool { return strings.Contains(out.String(), "/dev/pts/") })
	if !strings.Contains(out.String(), "24 80") {
		t.Errorf("initial size: %q", out.String())
	}
	if err := p.Resize(context.Background(), runtime.ConsoleSize{Width: 132, Height: 43}); err != nil {
		t.Fatal(err)
	}
	if _, err := inW.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	st := wait(t, p)
	if st.Code != 4 || !strings.Contains(out.String(), "43 132") {
		t.Errorf("status %+v output %q", st, out.String())
	}
	if err := p.Resize(context.Background(), runtime.ConsoleSize{Width: 1, Height: 1}); err == nil {
		t.Error("resize after exit succeeded")
	}
}

func TestResizeWithoutTerminal(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.writeSpec(t, []string{"true"})
	p := f.start(t, runtime.IO{})
	if err := p.Resize(context.Background(), runtime.ConsoleSize{Width: 1, Height: 1}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("resize: %v", err)
	}
	wait(t, p)
}

func TestExec(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	s := f.writeSpec(t, []string{"sleep", "100"})
	initProc := f.start(t, runtime.IO{})

	proc := *s.Process
	proc.Args = []string{"sh", "-c", "echo exec-out; cat; echo exec-err >&2; exit 5"}
	var stdout, stderr syncBuffer
	p, err := f.rt.Exec(ctx, f.id, "e1", &proc, runtime.IO{Stdin: strings.NewReader("piped\n"), Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatal(err)
	}
	if p.Pid() == 0 || p.Pid() == initProc.Pid() {
		t.Errorf("exec pid %d, init %d", p.Pid(), initProc.Pid())
	}
	st := wait(t, p)
	if st.Code != 5 || stdout.String() != "exec-out\npiped\n" || stderr.String() != "exec-err\n" {
		t.Errorf("status %+v stdout %q stderr %q", st, stdout.String(), stderr.String())
	}

	// With a terminal.
	proc.Args = []string{"sh", "-c", "stty size"}
	var tout syncBuffer
	p, err = f.rt.Exec(ctx, f.id, "e2", &proc, runtime.IO{Terminal: true, Stdout: &tout, Size: &runtime.ConsoleSize{Width: 90, Height: 30}})
	if err != nil {
		t.Fatal(err)
	}
	if st := wait(t, p); st.Code != 0 || strings.TrimSpace(tout.String()) != "30 90" {
		t.Errorf("terminal exec: %+v %q", st, tout.String())
	}

	// A missing command fails the exec call itself.
	proc.Args = []string{"nosuch"}
	_, err = f.rt.Exec(ctx, f.id, "e3", &proc, runtime.IO{Stdout: &stdout})
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), `exec: "nosuch": executable file not found in $PATH`) {
		t.Errorf("exec nosuch: %v", err)
	}

	// sleep is the namespace's PID 1: it ignores SIGTERM.
	if err := f.rt.Kill(ctx, f.id, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	if st := wait(t, initProc); st.Code != 137 {
		t.Errorf("init status %+v", st)
	}
	if _, err := f.rt.Exec(ctx, f.id, "e4", &proc, runtime.IO{}); err == nil {
		t.Error("exec into a stopped container succeeded")
	}
}

func TestStartError(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	f.writeSpec(t, []string{"nosuch"})
	var stdout, stderr syncBuffer
	p, err := f.rt.Create(ctx, f.id, f.bundle, runtime.IO{Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatal(err)
	}
	err = f.rt.Start(ctx, f.id)
	want := `runc run ` + f.id + `: exec: "nosuch": executable file not found in $PATH`
	if !errdefs.IsNotFound(err) || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("start: %v\nwant %s", err, want)
	}
	if _, err := p.Wait(ctx); err == nil {
		t.Error("wait after failed start: no error")
	}
	if stdout.String() != "" || stderr.String() != "" {
		t.Errorf("runtime error reached the container's output: %q %q", stdout.String(), stderr.String())
	}
	if err := spec.ResolveExecutable(f.rootfs, []string{"nosuch"}, nil); !errdefs.IsNotFound(err) {
		t.Errorf("ResolveExecutable: %v", err)
	}
}

func TestCreateErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.rt.Create(ctx, f.id, t.TempDir(), runtime.IO{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bundle without config.json: %v", err)
	}
	if _, err := f.rt.Create(ctx, "../x", f.bundle, runtime.IO{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad id: %v", err)
	}
	f.writeSpec(t, []string{"true"})
	p, err := f.rt.Create(ctx, f.id, f.bundle, runtime.IO{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.rt.Create(ctx, f.id, f.bundle, runtime.IO{}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("second create: %v", err)
	}
	if err := f.rt.Delete(ctx, f.id, false); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err == nil {
		t.Error("wait after delete before start: no error")
	}
	if err := f.rt.Start(ctx, f.id); !errdefs.IsNotFound(err) {
		t.Errorf("start after delete: %v", err)
	}
}

func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	if cgroups.DetectMode() == cgroups.V2 {
		t.Skip("checks the v1 file")
	}
	f := newFixture(t)
	f.writeSpec(t, []string{"sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; read x; true"},
		spec.WithMemoryLimit(64<<20), spec.WithPidsLimit(50))
	var out syncBuffer
	inR, inW := io.Pipe()
	p := f.start(t, runtime.IO{Stdin: inR, Stdout: &out})
	waitFor(t, "limit output", func() bool { return strings.Contains(out.String(), "\n") })
	if got := strings.TrimSpace(out.String()); got != "67108864" {
		t.Errorf("memory.limit_in_bytes inside: %q", got)
	}
	st, err := cgroups.ReadStats(f.cgroupPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryLimit != 64<<20 || st.PidsLimit != 50 || st.Pids == 0 || st.MemoryUsage == 0 || st.CPUUsage == 0 {
		t.Errorf("stats %+v", st)
	}
	pids, err := cgroups.Procs(f.cgroupPath)
	if err != nil || len(pids) == 0 || pids[0] != p.Pid() {
		t.Errorf("procs %v %v, init %d", pids, err, p.Pid())
	}
	inW.Close()
	if st := wait(t, p); st.Code != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestPidsLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// sh and the background sleep use the two PIDs; the next fork fails.
	f.writeSpec(t, []string{"sh", "-c", "sleep 10 & /bin/true; echo forked $?"}, spec.WithPidsLimit(2))
	var stdout, stderr syncBuffer
	st := f.run(t, runtime.IO{Stdout: &stdout, Stderr: &stderr})
	if strings.Contains(stdout.String(), "forked 0") || !strings.Contains(stderr.String(), "fork") {
		t.Errorf("status %+v stdout %q stderr %q", st, stdout.String(), stderr.String())
	}
}

func TestReadonlyRootfs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.writeSpec(t, []string{"touch", "/newfile"}, spec.WithRootfs(f.rootfs, true))
	var stderr syncBuffer
	st := f.run(t, runtime.IO{Stderr: &stderr})
	if st.Code == 0 || !strings.Contains(stderr.String(), "Read-only file system") {
		t.Errorf("status %+v stderr %q", st, stderr.String())
	}
}

func TestCapDrop(t *testing.T) {
	t.Parallel()
	script := "touch /tmp/f && chown 1:1 /tmp/f && echo chowned"
	for _, tc := range []struct {
		name string
		opts []spec.Opt
		ok   bool
	}{
		{"default", nil, true},
		{"drop CHOWN", []spec.Opt{spec.WithCapDrop([]string{"CHOWN"})}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.writeSpec(t, []string{"sh", "-c", script}, tc.opts...)
			var stdout, stderr syncBuffer
			st := f.run(t, runtime.IO{Stdout: &stdout, Stderr: &stderr})
			if tc.ok != (st.Code == 0) || tc.ok != strings.Contains(stdout.String(), "chowned") {
				t.Errorf("status %+v stdout %q stderr %q", st, stdout.String(), stderr.String())
			}
			if !tc.ok && !strings.Contains(stderr.String(), "Operation not permitted") {
				t.Errorf("stderr %q", stderr.String())
			}
		})
	}
}
