package integration

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func mountedUnder(dir string) int {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	return strings.Count(string(data), dir)
}

// TestKilledCLIAndMonitor kills the CLI and then the monitor and the
// workload with SIGKILL: ps must tell the truth, and rm -f / system prune
// must leave nothing behind.
func TestKilledCLIAndMonitor(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")

	// The CLI of a foreground run is SIGKILLed: the workload keeps running.
	cmd := exec.Command(berthBin, "run", "--name", "fg", "bb", "sleep", "300")
	cmd.Env = append(os.Environ(), "BERTH_ROOT="+e.root, "BERTH_STATE="+e.stat, "BERTH_CONFIG=/nonexistent")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "fg to run", func() bool {
		out, _ := e.berth("ps", "--format", "{{.Names}}")
		return strings.Contains(out, "fg")
	})
	cmd.Process.Kill()
	cmd.Wait()
	if out := e.must("ps", "--format", "{{.Names}} {{.State}}"); !strings.Contains(out, "fg running") {
		t.Fatalf("after the CLI was killed: %q", out)
	}

	// Monitor and workload both SIGKILLed: ps says exited, the mount is released.
	mpid, _ := strconv.Atoi(strings.TrimSpace(e.must("inspect", "--format", "{{.State.MonitorPid}}", "fg")))
	pid, _ := strconv.Atoi(strings.TrimSpace(e.must("inspect", "--format", "{{.State.Pid}}", "fg")))
	if mpid <= 0 || pid <= 0 {
		t.Fatalf("pids %d %d", mpid, pid)
	}
	syscall.Kill(mpid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "the workload to die", func() bool { return syscall.Kill(pid, 0) != nil })
	if out := e.must("ps", "-a", "--format", "{{.Names}} {{.State}}"); !strings.Contains(out, "fg exited") {
		t.Fatalf("ps after SIGKILL of monitor and workload: %q", out)
	}
	if n := mountedUnder(e.stat); n != 0 {
		t.Fatalf("%d mounts left under the state dir after ps reconciled", n)
	}
	e.must("rm", "fg")

	// Leftovers with no record at all (as a create killed half-way leaves):
	// system prune removes them.
	e.must("run", "-d", "--name", "ghost", "bb", "sleep", "300")
	id := strings.TrimSpace(e.must("inspect", "--format", "{{.ID}}", "ghost"))
	mpid, _ = strconv.Atoi(strings.TrimSpace(e.must("inspect", "--format", "{{.State.MonitorPid}}", "ghost")))
	pid, _ = strconv.Atoi(strings.TrimSpace(e.must("inspect", "--format", "{{.State.Pid}}", "ghost")))
	syscall.Kill(mpid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "ghost to die", func() bool { return syscall.Kill(pid, 0) != nil })
	// Drop the record behind berth's back.
	if err := os.Remove(e.root + "/berth.db"); err != nil {
		t.Fatal(err)
	}
	if mountedUnder(id) == 0 {
		t.Fatal("expected the orphan's rootfs to be still mounted before prune")
	}
	e.must("system", "prune")
	if n := mountedUnder(id); n != 0 {
		t.Fatalf("system prune left %d mounts of %s", n, id)
	}
	for _, p := range []string{e.stat + "/containers/" + id, e.root + "/containers/" + id, e.root + "/snapshots/" + id, e.stat + "/runc/" + id} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("system prune left %s", p)
		}
	}
	for _, ctrl := range []string{"memory", "pids", "cpu"} {
		if _, err := os.Stat("/sys/fs/cgroup/" + ctrl + "/berth/" + id); err == nil {
			t.Errorf("system prune left the %s cgroup", ctrl)
		}
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	e.must("run", "-d", "--name", "busy", "--memory", "64m", "bb", "sh", "-c", "while true; do :; done")
	out := e.must("stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}", "busy")
	f := strings.Fields(out)
	if len(f) < 5 || f[0] != "busy" || !strings.HasSuffix(f[1], "%") || !strings.Contains(out, "/ 64MiB") {
		t.Fatalf("stats = %q", out)
	}
	cpu, _ := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64)
	if cpu < 20 {
		t.Fatalf("a busy loop shows %.1f%% CPU", cpu)
	}
	e.must("rm", "-f", "busy")
}
