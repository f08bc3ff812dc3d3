package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVMVolumes: volumes, binds and tmpfs in a microVM, in one boot. A
// named volume carries data from a container to a VM and back and survives
// rm; a new volume is pre-filled from the image (also the image's VOLUME);
// :ro refuses writes, even after a remount in the guest; a host directory
// and a host file are read and written live; --tmpfs is a tmpfs; mount
// points are made on a --read-only root. volume rm of a volume a stopped
// VM record uses is refused.
func TestVMVolumes(t *testing.T) {
	e := vmEnv(t)
	e.loadWebImage() // busybox + /www/index.html, VOLUME /data with seed.txt
	hostDir, fileDir := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(hostDir, "in"), []byte("host dir\n"), 0o644)
	conf := filepath.Join(fileDir, "app.conf")
	os.WriteFile(conf, []byte("host file\n"), 0o644)
	os.WriteFile(filepath.Join(fileDir, "secret"), []byte("not for the guest\n"), 0o600)

	e.must("run", "--rm", "--network", "none", "-v", "shared:/shared", "bb", "sh", "-c", "echo from-container > /shared/c")

	script := `exec 2>&1
cat /shared/c; echo from-vm > /shared/v
cat /www/index.html /data/seed.txt; grep -E ' /(www|data) ' /proc/mounts
cat /host/in; echo back > /host/out
cat /etc/app.conf; echo appended >> /etc/app.conf
touch /ro/x; mount -o remount,rw /ro && touch /ro/y
touch /rootfile
grep ' /scratch ' /proc/mounts; echo s > /scratch/f && cat /scratch/f
ls /shares /etc/secret 2>/dev/null; echo end`
	out := e.must("run", "--vm", "--name", "v1", "--read-only",
		"-v", "shared:/shared", "-v", "site:/www", "-v", "rovol:/ro:ro",
		"-v", hostDir+":/host", "-v", conf+":/etc/app.conf", "--tmpfs", "/scratch",
		"web", "sh", "-c", script)
	for _, want := range []string{
		"from-container\n",                            // container → VM through the volume
		"hello from berth\n", "seeded by the image\n", // pre-filled named and anonymous volumes…
		" /www virtiofs", " /data virtiofs", // …mounted, not the image's own files
		"host dir\n", "host file\n",
		"touch: /ro/x: Read-only file system", "touch: /ro/y: Read-only file system",
		"touch: /rootfile: Read-only file system",
		"tmpfs /scratch tmpfs", "s\nend\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("VM output lacks %q:\n%s", want, out)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(hostDir, "out")); string(b) != "back\n" {
		t.Errorf("VM write to the bound directory reached the host as %q", b)
	}
	if b, _ := os.ReadFile(conf); string(b) != "host file\nappended\n" {
		t.Errorf("bound file on the host after the VM's append: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(e.root, "volumes", "rovol", "_data", "y")); b != nil {
		t.Error("the VM wrote into a :ro volume")
	}

	// The stopped VM still uses the volume; its data is the container's.
	if _, err := e.berth("volume", "rm", "shared"); err == nil || !strings.Contains(stderrOf(err), "in use") {
		t.Fatalf("volume rm of a volume a VM uses: %v", err)
	}
	e.must("rm", "v1")
	if out := e.must("run", "--rm", "--network", "none", "-v", "shared:/shared", "bb", "cat", "/shared/v", "/shared/c"); out != "from-vm\nfrom-container\n" {
		t.Fatalf("container reading what the VM wrote, after rm: %q", out)
	}
	e.checkNoVMLeftovers()
}

// TestVMVolumeKilled: a VM with volumes runs one virtiofsd per shared
// directory plus one for its files; volume rm is refused while it runs;
// after QEMU is SIGKILLed, rm -f leaves no virtiofsd and no state.
func TestVMVolumeKilled(t *testing.T) {
	e := vmEnv(t)
	id := strings.TrimSpace(e.must("run", "-d", "--vm", "--name", "k", "-v", "vol:/data", "-v", t.TempDir()+":/host:ro", "bb", "sleep", "1000"))
	// root, vol, the host dir and the files share (/etc/hosts, /etc/hostname)
	if n := countVirtiofsd(t, e.stat); n != 4 {
		t.Errorf("%d virtiofsd for the VM, want 4:\n%s", n, virtiofsdLines(t))
	}
	if _, err := e.berth("volume", "rm", "vol"); err == nil || !strings.Contains(stderrOf(err), "in use") {
		t.Fatalf("volume rm of a volume a running VM uses: %v", err)
	}
	if err := exec.Command("pkill", "-KILL", "-f", "qemu-system.*berth-"+id).Run(); err != nil {
		t.Fatalf("kill QEMU: %v", err)
	}
	if code := strings.TrimSpace(e.must("wait", "k")); code != "137" {
		t.Fatalf("exit after QEMU's SIGKILL = %q, want 137", code)
	}
	e.must("rm", "-f", "k")
	if n := countVirtiofsd(t, e.stat); n != 0 {
		t.Errorf("%d virtiofsd left after rm -f", n)
	}
	e.checkNoVMLeftovers()
	if _, err := os.Stat(filepath.Join(e.root, "volumes", "vol", "_data")); err != nil {
		t.Errorf("the volume went with the VM: %v", err)
	}
}

func virtiofsdLines(t *testing.T) string {
	var out []string
	for _, line := range strings.Split(hostPS(t), "\n") {
		if strings.Contains(line, "virtiofsd") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// countVirtiofsd counts the virtiofsd sockets (one per virtiofsd, which may
// run as two processes) under dir.
func countVirtiofsd(t *testing.T, dir string) int {
	t.Helper()
	socks := map[string]bool{}
	for _, line := range strings.Split(virtiofsdLines(t), "\n") {
		for _, f := range strings.Fields(line) {
			if s, ok := strings.CutPrefix(f, "--socket-path="); ok && strings.HasPrefix(s, dir) {
				socks[s] = true
			}
		}
	}
	return len(socks)
}
