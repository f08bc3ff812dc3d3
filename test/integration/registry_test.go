package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// freePort returns a loopback port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serveRegistry starts `berth registry serve` on loopback and returns its
// host:port; it is stopped when the test ends.
func (e *env) serveRegistry(args ...string) string {
	e.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(e.t))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, berthBin, append([]string{"registry", "serve", "--addr", addr, "--root", filepath.Join(e.t.TempDir(), "reg")}, args...)...)
	cmd.Env = append(os.Environ(), "BERTH_ROOT="+e.root, "BERTH_STATE="+e.stat)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cancel(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.Contains(line, addr) {
		e.t.Fatalf("registry serve said %q (%v)", line, err)
	}
	return addr
}

func TestRegistryPushPullLogin(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.DefaultCost)
	htpasswd := filepath.Join(dir, "htpasswd")
	os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600)
	reg := e.serveRegistry("--htpasswd", htpasswd)
	os.Setenv("DOCKER_CONFIG", filepath.Join(dir, "docker"))
	defer os.Unsetenv("DOCKER_CONFIG")

	ref := reg + "/team/bb:1"
	e.must("tag", "bb", ref)
	if _, err := e.berth("push", ref); err == nil || !strings.Contains(stderrOf(err), "unauthorized") {
		t.Fatalf("push without login: %v", err)
	}
	_, err := e.berthIn(strings.NewReader("wrong\n"), "login", "-u", "alice", "--password-stdin", reg)
	if err == nil || !strings.Contains(stderrOf(err), "unauthorized") || strings.Count(stderrOf(err), "\n") != 1 {
		t.Fatalf("login with a wrong password: %v", err)
	}
	if out, err := e.berthIn(strings.NewReader("s3cret\n"), "login", "-u", "alice", "--password-stdin", reg); err != nil || !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("login: %q %v", out, err)
	}
	if cfg, _ := os.ReadFile(filepath.Join(dir, "docker", "config.json")); !strings.Contains(string(cfg), reg) {
		t.Fatalf("config.json after login: %s", cfg)
	}
	e.must("push", ref)
	e.must("rmi", "-f", ref)
	e.must("rmi", "-f", "bb")
	e.must("pull", ref)
	start := time.Now()
	if out, err := e.berth("pull", ref); err != nil || !strings.Contains(out, ref) {
		t.Fatalf("second pull: %q %v", out, err)
	}
	t.Logf("second pull of an unchanged image: %v (whole command)", time.Since(start))
	if out := e.must("run", "--rm", ref, "echo", "from-registry"); out != "from-registry\n" {
		t.Fatalf("run of pulled image = %q", out)
	}
	// run pulls a missing image by itself; --pull never refuses to.
	e.must("rmi", "-f", ref)
	if _, err := e.berth("run", "--rm", "--pull", "never", ref, "true"); err == nil {
		t.Fatal("run --pull never found an image it does not have")
	}
	if out := e.must("run", "--rm", ref, "echo", "auto-pulled"); !strings.Contains(out, "auto-pulled") {
		t.Fatalf("run with a missing image = %q", out)
	}
	e.must("logout", reg)
	if _, err := e.berth("pull", ref); err == nil {
		t.Fatal("pull after logout succeeded against an authenticated registry")
	}

	// Bad input: an unknown host and a closed port give one-line errors.
	for _, bad := range []string{"nosuchhost.invalid/x:1", "127.0.0.1:1/x:1"} {
		_, err := e.berth("pull", bad)
		if err == nil || strings.Count(stderrOf(err), "\n") != 1 {
			t.Errorf("pull %s: %v", bad, err)
		}
	}
}

func TestRegistryInteropSkopeo(t *testing.T) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Skip("skopeo is not installed (apt-get install skopeo)")
	}
	e := newEnv(t)
	e.importBusybox("bb")
	reg := e.serveRegistry()
	e.must("tag", "bb", reg+"/interop/bb:berth")
	e.must("push", reg+"/interop/bb:berth")
	// berth pushed, skopeo pulls.
	oci := filepath.Join(t.TempDir(), "oci")
	if out, err := exec.Command("skopeo", "copy", "--src-tls-verify=false", "docker://"+reg+"/interop/bb:berth", "oci:"+oci+":x").CombinedOutput(); err != nil {
		t.Fatalf("skopeo pull of berth's push: %v: %s", err, out)
	}
	// skopeo pushes, berth pulls and runs.
	if out, err := exec.Command("skopeo", "copy", "--dest-tls-verify=false", "oci:"+oci+":x", "docker://"+reg+"/interop/bb:skopeo").CombinedOutput(); err != nil {
		t.Fatalf("skopeo push: %v: %s", err, out)
	}
	if out := e.must("run", "--rm", reg+"/interop/bb:skopeo", "echo", "via-skopeo"); out != "via-skopeo\n" {
		t.Fatalf("run of skopeo's push = %q", out)
	}
}

// TestDebianRegistryAcceptsPush pushes to Debian's docker-registry
// (distribution v2) when it is installed.
func TestDebianRegistryAcceptsPush(t *testing.T) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skip("docker-registry is not installed (apt-get install docker-registry)")
	}
	e := newEnv(t)
	e.importBusybox("bb")
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := filepath.Join(dir, "config.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.must("tag", "bb", addr+"/debian/bb:1")
	e.must("push", addr+"/debian/bb:1")
	e.must("rmi", "-f", addr+"/debian/bb:1")
	e.must("rmi", "-f", "bb")
	if out := e.must("run", "--rm", addr+"/debian/bb:1", "echo", "round-trip"); out != "round-trip\n" {
		t.Fatalf("run after a round trip through docker-registry = %q", out)
	}
}
