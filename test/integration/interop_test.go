package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// podman runs Debian's podman with its own throwaway storage, so the tests
// neither need nor touch the host's podman images.
func podman(t *testing.T, store string, args ...string) (string, error) {
	t.Helper()
	base := []string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"), "--storage-driver", "vfs"}
	out, err := exec.Command("podman", append(base, args...)...).CombinedOutput()
	return string(out), err
}

func TestPodmanArchiveInterop(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (apt-get install podman)")
	}
	e := newEnv(t)
	store := t.TempDir()
	t.Cleanup(func() { podman(t, store, "system", "reset", "-f") })
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.tar")
	os.WriteFile(rootfs, busyboxRootfs(t), 0o644)

	// podman save → berth load → berth run.
	if out, err := podman(t, store, "import", rootfs, "localhost/frompodman:1"); err != nil {
		t.Fatalf("podman import: %v: %s", err, out)
	}
	for _, format := range []string{"docker-archive", "oci-archive"} {
		archive := filepath.Join(dir, "podman-"+format+".tar")
		if out, err := podman(t, store, "save", "--format", format, "-o", archive, "localhost/frompodman:1"); err != nil {
			t.Fatalf("podman save %s: %v: %s", format, err, out)
		}
		e.must("load", "-i", archive)
		if out := e.must("run", "--rm", "localhost/frompodman:1", "echo", "podman-made"); out != "podman-made\n" {
			t.Fatalf("%s from podman: run = %q", format, out)
		}
		e.must("rmi", "-f", "localhost/frompodman:1")
	}

	// berth save → podman load, both formats.
	e.importBusybox("fromberth:2")
	for _, format := range []string{"docker-archive", "oci-archive"} {
		archive := filepath.Join(dir, "berth-"+format+".tar")
		e.must("save", "--format", format, "-o", archive, "fromberth:2")
		out, err := podman(t, store, "load", "-i", archive)
		if err != nil {
			t.Fatalf("podman load of berth's %s: %v: %s", format, err, out)
		}
		imgs, _ := podman(t, store, "images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}")
		if !strings.Contains(imgs, "fromberth") {
			t.Fatalf("podman images after loading berth's %s: %q (load said %q)", format, imgs, out)
		}
		podman(t, store, "rmi", "-af")
	}
}
