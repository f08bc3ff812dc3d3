package integration

import (
	"bytes"
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

	"github.com/creack/pty"
)

func TestRunExitCodesAndStreams(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	out, err := e.berth("run", "--rm", "bb", "sh", "-c", "echo to-out; echo to-err >&2; exit 3")
	if exitCode(err) != 3 {
		t.Fatalf("exit code = %d (%v), want 3", exitCode(err), err)
	}
	if out != "to-out\n" || !strings.Contains(stderrOf(err), "to-err") {
		t.Fatalf("stdout %q stderr %q", out, stderrOf(err))
	}
	// A foreground run whose process is killed by a signal exits 128+N.
	done := make(chan error, 1)
	go func() { _, err := e.berth("run", "--rm", "--name", "victim", "bb", "sleep", "30"); done <- err }()
	for i := 0; i < 100; i++ {
		if out, _ := e.berth("ps", "--format", "{{.Names}}"); strings.Contains(out, "victim") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.must("kill", "victim")
	if err := <-done; exitCode(err) != 137 {
		t.Fatalf("killed by SIGKILL: exit %d, want 137 (%v)", exitCode(err), err)
	}
	if out := e.must("ps", "-aq"); out != "" {
		t.Fatalf("--rm left containers: %q", out)
	}
}

func TestRunEnvWorkdirUserEntrypoint(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	envFile := filepath.Join(t.TempDir(), "env")
	os.WriteFile(envFile, []byte("# comment\nFROM_FILE=yes\n\n"), 0o644)
	out := e.must("run", "--rm", "-e", "A=1", "--env-file", envFile, "-w", "/tmp", "-u", "app", "--hostname", "box1",
		"bb", "sh", "-c", `echo "$A $FROM_FILE $(pwd) $(id -u):$(id -g) $(hostname) $HOME"`)
	if got := strings.TrimSpace(out); got != "1 yes /tmp 1000:1000 box1 /home/app" {
		t.Fatalf("got %q", got)
	}
	out = e.must("run", "--rm", "-u", "1000:50", "bb", "id")
	if !strings.Contains(out, "uid=1000") || !strings.Contains(out, "gid=50") {
		t.Fatalf("-u 1000:50: %q", out)
	}
	out = e.must("run", "--rm", "--entrypoint", "echo", "bb", "via", "entrypoint")
	if strings.TrimSpace(out) != "via entrypoint" {
		t.Fatalf("--entrypoint: %q", out)
	}
	if _, err := e.berth("run", "--rm", "-u", "nosuchuser", "bb", "true"); err == nil || !strings.Contains(stderrOf(err), "nosuchuser") {
		t.Fatalf("unknown user: %v", err)
	}
}

func TestRunStdin(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	out, err := e.berthIn(strings.NewReader("piped line\n"), "run", "--rm", "-i", "bb", "cat")
	if err != nil || out != "piped line\n" {
		t.Fatalf("cat of stdin = %q, %v", out, err)
	}
}

func TestDetachLogsWaitInspect(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	id := strings.TrimSpace(e.must("run", "-d", "--name", "job", "bb", "sh", "-c", "echo one; echo two >&2; sleep 1; echo three; exit 4"))
	if len(id) != 64 {
		t.Fatalf("run -d printed %q, want a 64-hex ID", id)
	}
	if ps := e.must("ps", "--format", "{{.Names}} {{.State}} {{.Isolation}}"); !strings.Contains(ps, "job running container") {
		t.Fatalf("ps while running: %q", ps)
	}
	if code := strings.TrimSpace(e.must("wait", "job")); code != "4" {
		t.Fatalf("wait = %q, want 4", code)
	}
	out, err := e.berth("logs", "job")
	if err != nil || out != "one\nthree\n" {
		t.Fatalf("logs stdout = %q, %v", out, err)
	}
	if out := e.must("logs", "--tail", "1", "job"); out != "three\n" {
		t.Fatalf("logs --tail 1 = %q", out)
	}
	if out := e.must("logs", "--timestamps", "--tail", "1", "job"); !strings.HasPrefix(out, "20") || !strings.HasSuffix(out, " three\n") {
		t.Fatalf("logs --timestamps = %q", out)
	}
	raw, _ := os.ReadFile(filepath.Join(e.root, "containers", id, id+"-json.log"))
	if !bytes.Contains(raw, []byte(`"stream":"stderr"`)) || !bytes.Contains(raw, []byte(`"time":`)) {
		t.Fatalf("log file is not json-file format: %s", raw)
	}
	if out := e.must("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "job"); strings.TrimSpace(out) != "exited 4" {
		t.Fatalf("inspect = %q", out)
	}
	if out := e.must("ps", "-a", "--format", "{{.Status}}"); !strings.HasPrefix(out, "Exited (4)") {
		t.Fatalf("ps -a status = %q", out)
	}
}

func TestExecStopKillRestart(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	e.must("run", "-d", "--name", "svc", "bb", "sh", "-c", `trap "exit 7" TERM; while true; do sleep 0.1; done`)
	if out := e.must("ps", "--format", "{{.Names}} {{.Status}}"); !strings.Contains(out, "svc Up") {
		logs, _ := e.berth("logs", "svc")
		all, _ := e.berth("ps", "-a")
		t.Fatalf("svc is not up after run -d: %q; logs %q", all, logs)
	}
	if out := e.must("exec", "-e", "X=42", "-w", "/tmp", "svc", "sh", "-c", `echo "$X $(pwd)"`); strings.TrimSpace(out) != "42 /tmp" {
		t.Fatalf("exec = %q", out)
	}
	if _, err := e.berth("exec", "svc", "sh", "-c", "exit 9"); exitCode(err) != 9 {
		t.Fatalf("exec exit code = %d, want 9", exitCode(err))
	}
	if out, err := e.berthIn(strings.NewReader("via stdin"), "exec", "-i", "svc", "cat"); err != nil || out != "via stdin" {
		t.Fatalf("exec -i = %q, %v", out, err)
	}
	if _, err := e.berth("exec", "svc", "nosuchcmd"); exitCode(err) != 127 {
		t.Fatalf("exec of a missing command: exit %d, want 127 (%v)", exitCode(err), err)
	}
	if top := e.must("top", "svc"); !strings.Contains(top, "sh -c") {
		t.Fatalf("top = %q", top)
	}
	e.must("stop", "-t", "5", "svc")
	if out := e.must("inspect", "--format", "{{.State.ExitCode}}", "svc"); strings.TrimSpace(out) != "7" {
		t.Fatalf("stop: exit code %q, want 7 (the TERM trap)", out)
	}
	e.must("start", "svc")
	e.must("kill", "-s", "KILL", "svc")
	if code := strings.TrimSpace(e.must("wait", "svc")); code != "137" {
		t.Fatalf("kill -s KILL: %q, want 137", code)
	}
	// A process that ignores SIGTERM is killed after the timeout.
	e.must("run", "-d", "--name", "stubborn", "bb", "sh", "-c", `trap "" TERM; while true; do sleep 0.1; done`)
	start := time.Now()
	e.must("stop", "-t", "1", "stubborn")
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("stop -t 1 took %v", d)
	}
	if out := e.must("inspect", "--format", "{{.State.ExitCode}}", "stubborn"); strings.TrimSpace(out) != "137" {
		t.Fatalf("stubborn exit = %q, want 137", out)
	}
	e.must("restart", "-t", "1", "stubborn")
	if out := e.must("inspect", "--format", "{{.State.Status}} {{.State.RestartCount}}", "stubborn"); strings.TrimSpace(out) != "running 1" {
		t.Fatalf("after restart: %q", out)
	}
	if _, err := e.berth("rm", "stubborn"); err == nil {
		t.Fatal("rm of a running container succeeded without -f")
	}
	e.must("rm", "-f", "stubborn")
	e.must("container", "prune")
	if out := e.must("ps", "-aq"); out != "" {
		t.Fatalf("after prune: %q", out)
	}
}

func cgroupFile(v1, v2 string) string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return "/sys/fs/cgroup/" + v2
	}
	return "/sys/fs/cgroup/" + v1
}

func TestResourceLimitsAndSecurity(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	out := e.must("run", "--rm", "--memory", "64m", "bb", "cat", cgroupFile("memory/memory.limit_in_bytes", "memory.max"))
	if strings.TrimSpace(out) != strconv.Itoa(64<<20) {
		t.Fatalf("memory limit inside = %q", out)
	}
	out = e.must("run", "--rm", "--cpus", "0.5", "bb", "sh", "-c", "cat "+cgroupFile("cpu/cpu.cfs_quota_us", "cpu.max"))
	if !strings.HasPrefix(strings.TrimSpace(out), "50000") {
		t.Fatalf("cpu quota inside = %q", out)
	}
	// A memory hog is killed at its limit.
	if _, err := e.berth("run", "--rm", "--memory", "32m", "bb", "sh", "-c", "head -c 400m /dev/zero | tail"); exitCode(err) != 137 {
		t.Fatalf("memory hog: exit %d, want 137 (%v)", exitCode(err), err)
	}
	// The pids limit refuses a fork bomb.
	out, err := e.berth("run", "--rm", "--pids-limit", "8", "bb", "sh", "-c", "for i in $(seq 20); do sleep 2 & done; wait")
	if err == nil && !strings.Contains(out+stderrOf(err), "fork") {
		t.Fatalf("pids limit: 20 forks succeeded: %q", out)
	}
	if !strings.Contains(stderrOf(err), "fork") {
		t.Fatalf("pids limit: want a fork failure, got %v", err)
	}
	if _, err := e.berth("run", "--rm", "--read-only", "bb", "touch", "/x"); err == nil || !strings.Contains(stderrOf(err), "Read-only") {
		t.Fatalf("--read-only write: %v", err)
	}
	e.must("run", "--rm", "bb", "chown", "1000", "/tmp")
	if _, err := e.berth("run", "--rm", "--cap-drop", "CHOWN", "bb", "chown", "1000", "/tmp"); err == nil {
		t.Fatal("chown succeeded with CHOWN dropped")
	}
	if _, err := e.berth("run", "--rm", "--cap-drop", "MKNOD", "bb", "mknod", "/tmp/n", "c", "1", "3"); err == nil {
		t.Fatal("mknod succeeded with MKNOD dropped")
	}
	if out := e.must("run", "--rm", "--security-opt", "no-new-privileges", "bb", "grep", "NoNewPrivs", "/proc/self/status"); !strings.Contains(out, "1") {
		t.Fatalf("no-new-privileges: %q", out)
	}
	if out := e.must("run", "--rm", "bb", "grep", "Seccomp:", "/proc/self/status"); !strings.Contains(out, "2") {
		t.Fatalf("default seccomp not in filter mode: %q", out)
	}
	if out := e.must("run", "--rm", "--security-opt", "seccomp=unconfined", "bb", "grep", "Seccomp:", "/proc/self/status"); !strings.Contains(out, "0") {
		t.Fatalf("seccomp=unconfined: %q", out)
	}
	profile := filepath.Join(t.TempDir(), "deny-mkdir.json")
	os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644)
	if _, err := e.berth("run", "--rm", "--security-opt", "seccomp="+profile, "bb", "mkdir", "/tmp/d"); err == nil {
		t.Fatal("mkdir succeeded under a profile that denies it")
	}
	e.must("run", "--rm", "bb", "mkdir", "/tmp/d")
	// NET_ADMIN is not in the default set; --cap-add grants it.
	if _, err := e.berth("run", "--rm", "bb", "ip", "link", "set", "lo", "down"); err == nil {
		t.Fatal("ip link set succeeded without NET_ADMIN")
	}
	e.must("run", "--rm", "--cap-add", "NET_ADMIN", "bb", "ip", "link", "set", "lo", "down")
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"run", "--rm", "nosuchimage", "true"}, 125, "nosuchimage"},
		{[]string{"run", "--rm", "--memory", "lots", "bb", "true"}, 125, "--memory"},
		{[]string{"run", "--rm", "bb", "nosuchcmd"}, 127, "nosuchcmd"},
		{[]string{"run", "--rm", "--runtime", "/nonexistent/runc", "bb", "true"}, 125, "apt-get install"},
		{[]string{"stop", "nosuchcontainer"}, 1, "nosuchcontainer"},
		{[]string{"logs", "nosuchcontainer"}, 1, "no such container"},
	}
	for _, c := range cases {
		_, err := e.berth(c.args...)
		if exitCode(err) != c.code || !strings.Contains(stderrOf(err), c.want) {
			t.Errorf("berth %s: exit %d stderr %q; want exit %d mentioning %q", strings.Join(c.args, " "), exitCode(err), stderrOf(err), c.code, c.want)
		}
		if n := strings.Count(stderrOf(err), "\n"); n > 1 {
			t.Errorf("berth %s: error is %d lines, want one: %q", strings.Join(c.args, " "), n, stderrOf(err))
		}
	}
	if out := e.must("ps", "-aq"); out != "" {
		t.Fatalf("failed runs left containers: %q", out)
	}
}

func TestTerminal(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	cmd := exec.Command(berthBin, "run", "--rm", "-i", "-t", "bb", "sh", "-c", "stty size; tty; sleep 2; stty size")
	cmd.Env = append(os.Environ(), "BERTH_ROOT="+e.root, "BERTH_STATE="+e.stat, "BERTH_CONFIG=/nonexistent")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 33, Cols: 111})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() { buf.ReadFrom(f); close(done) }()
	time.Sleep(1 * time.Second)
	pty.Setsize(f, &pty.Winsize{Rows: 44, Cols: 99}) // the CLI gets SIGWINCH and forwards the size
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run -t: %v: %q", err, buf.String())
	}
	<-done
	if !strings.Contains(buf.String(), "33 111") || !strings.Contains(buf.String(), "/dev/pts/") || !strings.Contains(buf.String(), "44 99") {
		t.Fatalf("terminal output = %q, want size 33 111, a /dev/pts tty, then 44 99 after the resize", buf.String())
	}
	// create, then start -a: the same workload, attached.
	e.must("create", "--name", "later", "bb", "sh", "-c", "echo started-later; exit 6")
	if out, err := e.berth("start", "-a", "later"); exitCode(err) != 6 || out != "started-later\n" {
		t.Fatalf("start -a = %q, exit %d", out, exitCode(err))
	}
}

func TestSignalProxyAndKilledMonitor(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	// SIGTERM to a foreground berth run reaches the process.
	cmd := exec.Command(berthBin, "run", "--rm", "bb", "sh", "-c", `trap "exit 5" TERM; echo ready; while true; do sleep 0.1; done`)
	cmd.Env = append(os.Environ(), "BERTH_ROOT="+e.root, "BERTH_STATE="+e.stat, "BERTH_CONFIG=/nonexistent")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := stdout.Read(buf); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 5 {
		t.Fatalf("after SIGTERM: exit %d (%v), want 5 from the trap", code, err)
	}

	// A monitor killed with SIGKILL: ps stays truthful and rm -f cleans up.
	e.must("run", "-d", "--name", "orphan", "bb", "sleep", "300")
	mpid := strings.TrimSpace(e.must("inspect", "--format", "{{.State.MonitorPid}}", "orphan"))
	n, _ := strconv.Atoi(mpid)
	if n <= 0 {
		t.Fatalf("monitor pid %q", mpid)
	}
	syscall.Kill(n, syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	if out := e.must("ps", "--format", "{{.Names}} {{.State}}"); !strings.Contains(out, "orphan running") {
		t.Fatalf("ps after monitor SIGKILL = %q (the sleep still runs)", out)
	}
	e.must("rm", "-f", "orphan")
	if out := e.must("ps", "-aq"); out != "" {
		t.Fatalf("rm -f left %q", out)
	}
}

func TestConcurrentRuns(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			out, err := e.berth("run", "--rm", "--name", fmt.Sprintf("par%d", i), "bb", "echo", strconv.Itoa(i))
			if err != nil || strings.TrimSpace(out) != strconv.Itoa(i) {
				errs <- fmt.Errorf("run %d: %q %v", i, out, err)
			}
			if _, err := e.berth("ps", "-a"); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if out := e.must("ps", "-aq"); out != "" {
		t.Fatalf("left %q", out)
	}
}

func TestInfoNamesRuntime(t *testing.T) {
	e := newEnv(t)
	out := e.must("info")
	if !strings.Contains(out, "Default Runtime: ") || !strings.Contains(out, "Runtime Choice: ") {
		t.Fatalf("info = %q", out)
	}
}
