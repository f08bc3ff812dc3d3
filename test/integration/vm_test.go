package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// vmEnv is an env whose host can boot berth microVMs (under TCG here); the
// test skips with what is missing otherwise.
func vmEnv(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("boots microVMs; skipped with -short")
	}
	e := newEnv(t)
	kdir := os.Getenv("BERTH_KERNEL_DIR")
	if kdir == "" {
		kdir = "/var/lib/berth/kernel"
	}
	for _, p := range []string{filepath.Join(kdir, "vmlinuz"), "/usr/lib/qemu/virtiofsd", filepath.Join(filepath.Dir(berthBin), "berth-agent")} {
		if !exists(p) {
			t.Skipf("microVM tests need %s (make setup fetches the kernel; make build the agent)", p)
		}
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("microVM tests need qemu-system-x86_64 (Debian package qemu-system-x86)")
	}
	e.importBusybox("bb")
	return e
}

// hostPS lists the host's processes' command lines.
func hostPS(t *testing.T) string {
	out, err := exec.Command("ps", "-eo", "args").Output()
	if err != nil {
		t.Fatalf("ps: %v", err)
	}
	return string(out)
}

// TestVMRun runs a workload to exit in a microVM: its exit code, env,
// workdir, user and stdin, and a kernel that is not the host's.
func TestVMRun(t *testing.T) {
	e := vmEnv(t)
	var uts syscall.Utsname
	_ = syscall.Uname(&uts)
	var host []byte
	for _, c := range uts.Release {
		if c == 0 {
			break
		}
		host = append(host, byte(c))
	}
	out, err := e.berthIn(strings.NewReader("piped in\n"), "run", "--rm", "-i", "--vm", "-e", "X=42", "-w", "/tmp", "-u", "1000",
		"bb", "sh", "-c", `read l; echo "$l|$X|$(pwd)|$(id -u)|$(uname -r)"; exit 3`)
	if exitCode(err) != 3 {
		t.Fatalf("run --vm: exit %d, want 3 (%v)", exitCode(err), err)
	}
	f := strings.Split(strings.TrimSpace(out), "|")
	if len(f) != 5 || f[0] != "piped in" || f[1] != "42" || f[2] != "/tmp" || f[3] != "1000" {
		t.Fatalf("run --vm output = %q", out)
	}
	if f[4] == string(host) || f[4] == "" {
		t.Fatalf("guest kernel %q is the host's %q: not a VM", f[4], host)
	}
	// Falling back to TCG says so in one line.
	if info := e.must("info"); strings.Contains(info, "VM Accelerator: tcg") {
		if n := strings.Count(stderrOf(err), "TCG"); n != 1 {
			t.Fatalf("TCG fallback: want one notice on stderr, got %q", stderrOf(err))
		}
	}
	// The image's command, resource flags: --cpus rounds up to vCPUs,
	// --memory becomes the guest's RAM.
	out = e.must("run", "--rm", "--vm", "--cpus", "1.5", "-m", "160m", "bb", "sh", "-c", `nproc; sed -n "s/MemTotal: *\([0-9]*\) kB/\1/p" /proc/meminfo`)
	f = strings.Fields(out)
	if len(f) != 2 || f[0] != "2" {
		t.Fatalf("--cpus 1.5: nproc/meminfo = %q, want 2 vCPUs", out)
	}
	if kb, _ := strconv.Atoi(f[1]); kb < 100<<10 || kb > 160<<10 {
		t.Fatalf("-m 160m: guest MemTotal %s kB", f[1])
	}
	if out := e.must("ps", "-aq"); out != "" {
		t.Fatalf("--rm left %q", out)
	}
}

// TestVMDetached drives a detached microVM through the container verbs:
// ps, logs, exec, stats, top, stop (TERM, then KILL after the timeout),
// kill -s, restart, and checks that host and guest processes stay apart.
func TestVMDetached(t *testing.T) {
	e := vmEnv(t)
	// A host process the guest must not see.
	marker := exec.Command("sleep", "7777.25")
	if err := marker.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { marker.Process.Kill(); marker.Wait() }()

	e.must("run", "-d", "--vm", "--name", "svc", "bb", "sh", "-c",
		`trap "echo got TERM; exit 7" TERM; sleep 8888.5 & echo started; while true; do sleep 0.1; done`)
	if out := e.must("ps", "--format", "{{.Names}} {{.Isolation}} {{.Status}}"); !strings.Contains(out, "svc vm Up") {
		t.Fatalf("ps = %q, want svc as a running vm", out)
	}
	waitFor(t, "the VM's first log line", func() bool { l, _ := e.berth("logs", "svc"); return strings.Contains(l, "started") })
	if out := e.must("exec", "-e", "X=42", "-w", "/tmp", "svc", "sh", "-c", `echo "$X $(pwd)"`); strings.TrimSpace(out) != "42 /tmp" {
		t.Fatalf("exec = %q", out)
	}
	if _, err := e.berth("exec", "svc", "sh", "-c", "exit 9"); exitCode(err) != 9 {
		t.Fatalf("exec exit code = %d, want 9 (%v)", exitCode(err), err)
	}
	if out, err := e.berthIn(strings.NewReader("via stdin"), "exec", "-i", "svc", "cat"); err != nil || out != "via stdin" {
		t.Fatalf("exec -i = %q, %v", out, err)
	}
	// Isolation: the guest sees none of the host's processes, the host sees
	// none of the guest's (only QEMU).
	guest := e.must("exec", "svc", "ps", "-o", "args")
	if strings.Contains(guest, "7777.25") || !strings.Contains(guest, "8888.5") {
		t.Fatalf("guest process list (want its own sleep, not the host's):\n%s", guest)
	}
	if strings.Contains(hostPS(t), "sleep 8888.5") {
		t.Fatal("the guest's process shows in the host's process list")
	}
	if top := e.must("top", "svc"); !strings.Contains(top, "qemu-system") {
		t.Fatalf("top of a VM = %q, want its QEMU process", top)
	}
	stats := e.must("stats", "--no-stream", "svc")
	if !strings.Contains(stats, "MiB / 256MiB") {
		t.Fatalf("stats = %q, want QEMU's memory against the 256 MiB guest", stats)
	}
	// A memory hog meets the guest's RAM, not the host's; the VM survives.
	if _, err := e.berth("exec", "svc", "sh", "-c", "echo 1 > /proc/sys/vm/overcommit_memory; tail -c 600m /dev/zero >/dev/null"); exitCode(err) != 137 {
		t.Fatalf("memory hog: exit %d, want 137 (OOM-killed in the guest): %v", exitCode(err), err)
	}
	if out := e.must("exec", "svc", "echo", "alive"); out != "alive\n" {
		t.Fatalf("after the hog: %q", out)
	}

	e.must("stop", "-t", "10", "svc")
	if out := e.must("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "svc"); strings.TrimSpace(out) != "exited 7" {
		t.Fatalf("stop: %q, want exited 7 (the TERM trap)", out)
	}
	if logs := e.must("logs", "svc"); !strings.Contains(logs, "got TERM") {
		t.Fatalf("logs after stop = %q", logs)
	}
	e.must("start", "svc")
	e.must("kill", "-s", "USR1", "svc") // sh's default for USR1: die of it
	if code := strings.TrimSpace(e.must("wait", "svc")); code != "138" {
		t.Fatalf("kill -s USR1: wait = %q, want 138", code)
	}

	// A workload that ignores SIGTERM is killed after the timeout.
	e.must("run", "-d", "--vm", "--name", "stubborn", "bb", "sh", "-c", `trap "" TERM; echo trapped; while true; do sleep 0.1; done`)
	waitFor(t, "the trap to be set", func() bool { l, _ := e.berth("logs", "stubborn"); return strings.Contains(l, "trapped") })
	start := time.Now()
	e.must("stop", "-t", "1", "stubborn")
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("stop -t 1 took %v", d)
	}
	if out := e.must("inspect", "--format", "{{.State.ExitCode}}", "stubborn"); strings.TrimSpace(out) != "137" {
		t.Fatalf("stubborn exit = %q, want 137", out)
	}
	e.must("rm", "svc", "stubborn")
	e.checkNoVMLeftovers()
}

// checkNoVMLeftovers fails when a QEMU or virtiofsd of this env still runs
// or a VM state directory remains.
func (e *env) checkNoVMLeftovers() {
	e.t.Helper()
	waitFor(e.t, "QEMU and virtiofsd of this test to exit", func() bool {
		ps := hostPS(e.t)
		return !strings.Contains(ps, e.stat)
	})
	if ents, _ := os.ReadDir(filepath.Join(e.stat, "vm")); len(ents) != 0 {
		e.t.Fatalf("VM state left in %s: %v", filepath.Join(e.stat, "vm"), ents)
	}
}

// TestVMKilled kills the monitor, then QEMU, with SIGKILL: ps tells the
// truth and rm -f leaves no process, mount or state behind.
func TestVMKilled(t *testing.T) {
	e := vmEnv(t)
	id := strings.TrimSpace(e.must("run", "-d", "--vm", "--name", "a", "bb", "sleep", "1000"))
	out, err := exec.Command("pgrep", "-f", "monitor "+id).Output()
	if err != nil {
		t.Fatalf("find the monitor of %s: %v", id, err)
	}
	pid, _ := strconv.Atoi(strings.Fields(string(out))[0])
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "ps to see the VM gone with its monitor", func() bool {
		out, _ := e.berth("ps", "-a", "--format", "{{.Names}} {{.Status}}")
		return strings.Contains(out, "a Exited")
	})
	id = strings.TrimSpace(e.must("run", "-d", "--vm", "--name", "b", "bb", "sleep", "1000"))
	if err := exec.Command("pkill", "-KILL", "-f", "qemu-system.*berth-"+id).Run(); err != nil {
		t.Fatalf("kill QEMU: %v", err)
	}
	if code := strings.TrimSpace(e.must("wait", "b")); code != "137" {
		t.Fatalf("QEMU killed with SIGKILL: exit %q, want 137", code)
	}
	if msg := e.must("inspect", "--format", "{{.State.Error}}", "b"); !strings.Contains(msg, "VM stopped") {
		t.Fatalf("State.Error = %q, want why the VM stopped", msg)
	}
	e.must("rm", "-f", "a", "b")
	if n := mountedUnder(e.root); n != 0 {
		t.Fatalf("%d mounts left under %s", n, e.root)
	}
	e.checkNoVMLeftovers()
}

// TestVMBadInput: a missing kernel, an unknown accelerator and a missing
// entrypoint fail clearly, with nothing left running.
func TestVMBadInput(t *testing.T) {
	e := vmEnv(t)
	_, err := e.berth("run", "--rm", "--vm", "--kernel", "/nonexistent/vmlinuz", "bb", "true")
	if exitCode(err) != 125 || !strings.Contains(stderrOf(err), "/nonexistent/vmlinuz") {
		t.Fatalf("missing kernel: exit %d, %v", exitCode(err), err)
	}
	_, err = e.berth("run", "--rm", "--vm", "--accel", "hvf", "bb", "true")
	if exitCode(err) != 125 || !strings.Contains(stderrOf(err), "kvm or tcg") {
		t.Fatalf("bad --accel: exit %d, %v", exitCode(err), err)
	}
	_, err = e.berth("run", "--rm", "--vm", "bb", "/no/such/binary")
	if exitCode(err) != 127 || !strings.Contains(stderrOf(err), "/no/such/binary") {
		t.Fatalf("missing entrypoint: exit %d, %v", exitCode(err), err)
	}
	if out := e.must("ps", "-aq"); out != "" {
		t.Fatalf("failed runs left %q", out)
	}
	e.checkNoVMLeftovers()
}
