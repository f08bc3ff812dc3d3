package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNamedVolumes(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")

	// Created on first use; data written by one workload is read by the next
	// and survives rm of the container.
	e.must("run", "--name", "writer", "--network", "none", "-v", "data:/data", "bb", "sh", "-c", "echo kept > /data/f")
	e.must("rm", "writer")
	if out := e.must("run", "--rm", "--network", "none", "-v", "data:/data", "bb", "cat", "/data/f"); out != "kept\n" {
		t.Fatalf("second workload read %q", out)
	}
	if out := e.must("volume", "ls", "-q"); strings.TrimSpace(out) != "data" {
		t.Fatalf("volume ls = %q", out)
	}
	mp := strings.TrimSpace(e.must("volume", "inspect", "--format", "{{.Mountpoint}}", "data"))
	if mp != filepath.Join(e.root, "volumes", "data", "_data") {
		t.Errorf("mountpoint %q", mp)
	}
	// Read-only mounts refuse writes, both spellings.
	if _, err := e.berth("run", "--rm", "--network", "none", "-v", "data:/data:ro", "bb", "sh", "-c", "echo x > /data/g"); err == nil {
		t.Error("wrote through -v NAME:/PATH:ro")
	}
	if _, err := e.berth("run", "--rm", "--network", "none", "--mount", "type=volume,source=data,target=/data,readonly", "bb", "touch", "/data/g"); err == nil {
		t.Error("wrote through --mount …,readonly")
	}
	// In use (even by a stopped workload): rm refused without -f.
	e.must("create", "--name", "holder", "--network", "none", "-v", "data:/data", "bb", "true")
	_, err := e.berth("volume", "rm", "data")
	if err == nil || !strings.Contains(stderrOf(err), "in use") {
		t.Fatalf("volume rm of a volume in use: %v", err)
	}
	e.must("rm", "holder")
	e.must("volume", "create", "--label", "team=a", "spare")
	if out := e.must("volume", "inspect", "--format", "{{.Labels}}", "spare"); !strings.Contains(out, "team:a") {
		t.Errorf("labels: %q", out)
	}
	e.must("volume", "rm", "data", "spare")
	if out := e.must("volume", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("volume ls after rm = %q", out)
	}
	// -f removes a volume in use.
	e.must("create", "--name", "holder2", "--network", "none", "-v", "forced:/data", "bb", "true")
	e.must("volume", "rm", "-f", "forced")
}

func TestVolumeFromImage(t *testing.T) {
	requireNetworking(t)
	e := newEnv(t)
	e.loadWebImage()

	// A new named volume is filled from the image's content at its path.
	if out := e.must("run", "--rm", "--network", "none", "-v", "site:/www", "web", "cat", "/www/index.html"); out != "hello from berth\n" {
		t.Fatalf("pre-filled volume: %q", out)
	}
	if data, err := os.ReadFile(filepath.Join(e.root, "volumes", "site", "_data", "index.html")); err != nil || string(data) != "hello from berth\n" {
		t.Fatalf("volume data on the host: %q %v", data, err)
	}
	// nocopy keeps it empty.
	if out := e.must("run", "--rm", "--network", "none", "-v", "bare:/www:nocopy", "web", "ls", "-A", "/www"); out != "" {
		t.Errorf("nocopy volume has %q", out)
	}

	// The image's VOLUME /data becomes an anonymous volume, pre-filled too;
	// rm keeps it, rm -v removes it.
	e.must("create", "--name", "anon1", "--network", "none", "web", "cat", "/data/seed.txt")
	vol1 := e.inspect("anon1", "{{(index .Mounts 0).Source}}")
	if len(vol1) != 64 {
		t.Fatalf("anonymous volume name %q", vol1)
	}
	e.must("start", "anon1")
	e.must("wait", "anon1")
	if out := e.must("logs", "anon1"); out != "seeded by the image\n" {
		t.Errorf("anonymous volume content %q", out)
	}
	e.must("rm", "anon1")
	if out := e.must("volume", "ls", "-q"); !strings.Contains(out, vol1) {
		t.Fatalf("rm without -v removed the anonymous volume: %q", out)
	}
	e.must("create", "--name", "anon2", "--network", "none", "web", "true")
	vol2 := e.inspect("anon2", "{{(index .Mounts 0).Source}}")
	e.must("rm", "-v", "anon2")
	if out := e.must("volume", "ls", "-q"); strings.Contains(out, vol2) {
		t.Fatalf("rm -v kept the anonymous volume: %q", out)
	}
	// prune takes the unused anonymous volume, not the named ones.
	e.must("volume", "prune")
	out := e.must("volume", "ls", "-q")
	if strings.Contains(out, vol1) || !strings.Contains(out, "site") {
		t.Fatalf("after prune: %q", out)
	}
	e.must("volume", "prune", "-a")
	if out := e.must("volume", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("after prune -a: %q", out)
	}
}

func TestBindAndTmpfs(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "in"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := e.must("run", "--rm", "--network", "none", "-v", host+":/mnt", "bb", "sh", "-c", "cat /mnt/in; echo back > /mnt/out"); out != "from host\n" {
		t.Fatalf("bind read %q", out)
	}
	if data, _ := os.ReadFile(filepath.Join(host, "out")); string(data) != "back\n" {
		t.Fatalf("bind write reached the host as %q", data)
	}
	if _, err := e.berth("run", "--rm", "--network", "none", "--mount", "type=bind,source="+host+",target=/mnt,readonly", "bb", "touch", "/mnt/x"); err == nil {
		t.Error("wrote through a read-only bind")
	}
	if _, err := e.berth("run", "--rm", "--network", "none", "--mount", "type=bind,source="+host+"/missing,target=/mnt", "bb", "true"); err == nil {
		t.Error("--mount bind of a missing source was accepted")
	}
	// -v creates a missing host directory, like Docker.
	e.must("run", "--rm", "--network", "none", "-v", host+"/made:/made", "bb", "true")
	if fi, err := os.Stat(filepath.Join(host, "made")); err != nil || !fi.IsDir() {
		t.Errorf("-v did not create the host directory: %v", err)
	}
	out := e.must("run", "--rm", "--network", "none", "--tmpfs", "/scratch:size=1m", "--mount", "type=tmpfs,target=/t,tmpfs-mode=1770", "bb",
		"sh", "-c", "echo x > /scratch/f && cat /scratch/f && grep -E ' /(scratch|t) ' /proc/mounts && stat -c %a /t")
	for _, want := range []string{"x\n", "tmpfs /scratch tmpfs", "noexec", "tmpfs /t tmpfs", "1770"} {
		if !strings.Contains(out, want) {
			t.Errorf("tmpfs output lacks %q:\n%s", want, out)
		}
	}
}

// TestCommandFromBind: a command that only exists in a bind mount runs
// (the root filesystem check must not refuse it).
func TestCommandFromBind(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("bb")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("#!/bin/sh\necho from-bind\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out := e.must("run", "--rm", "--network", "none", "-v", dir+":/opt/tools:ro", "bb", "/opt/tools/hello"); out != "from-bind\n" {
		t.Fatalf("got %q", out)
	}
	if out := e.must("run", "--rm", "--network", "none", "-e", "PATH=/opt/tools:/bin", "-v", dir+":/opt/tools:ro", "bb", "hello"); out != "from-bind\n" {
		t.Fatalf("via PATH: %q", out)
	}
	e.must("run", "-d", "--name", "holder", "--network", "none", "-v", dir+":/opt/tools:ro", "bb", "sleep", "300")
	if out := e.must("exec", "holder", "/opt/tools/hello"); out != "from-bind\n" {
		t.Fatalf("exec: %q", out)
	}
	if _, err := e.berth("run", "--rm", "--network", "none", "bb", "/opt/tools/hello"); exitCode(err) != 127 {
		t.Fatalf("without the bind: %v", err)
	}
}
