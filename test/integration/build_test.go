package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// writeContext writes files (path → content; a trailing "/" makes a
// directory) into a new build context directory.
func writeContext(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// imageConfig returns the stored config of image ref.
func (e *env) imageConfig(ref string) v1.ConfigFile {
	e.t.Helper()
	out := e.must("image", "inspect", ref)
	var imgs []struct{ Config v1.ConfigFile }
	if err := json.Unmarshal([]byte(out), &imgs); err != nil || len(imgs) != 1 {
		e.t.Fatalf("image inspect %s: %v: %s", ref, err, out)
	}
	return imgs[0].Config
}

// build runs berth build and returns its output; the image ID is the last line.
func (e *env) build(args ...string) (string, string) {
	e.t.Helper()
	out := e.must(append([]string{"build"}, args...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	id := lines[len(lines)-1]
	if !strings.HasPrefix(id, "sha256:") {
		e.t.Fatalf("build did not end with an image ID:\n%s", out)
	}
	return out, id
}

func (e *env) runOut(args ...string) string {
	e.t.Helper()
	return strings.TrimSpace(e.must(append([]string{"run", "--rm"}, args...)...))
}

// checkNoBuildLeftovers fails when a build left mounts, snapshots, runtime
// state or scratch files behind.
func (e *env) checkNoBuildLeftovers() {
	e.t.Helper()
	for _, dir := range []string{
		filepath.Join(e.stat, "build", "runs"), filepath.Join(e.stat, "build", "bundles"), filepath.Join(e.root, "snapshots"),
		filepath.Join(e.stat, "runc"), filepath.Join(e.root, "build", "tmp"),
	} {
		ents, _ := os.ReadDir(dir)
		for _, ent := range ents {
			e.t.Errorf("build left %s behind", filepath.Join(dir, ent.Name()))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), e.root) || strings.Contains(string(mounts), e.stat) {
		e.t.Errorf("build left a mount behind:\n%s", mounts)
	}
	if ds, _ := filepath.Glob("/sys/fs/cgroup/*/berth/build-*"); len(ds) > 0 {
		e.t.Errorf("build left cgroups behind: %v", ds)
	}
}

func tarGz(t *testing.T, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o640, Size: int64(len(content)), Uid: 7, Gid: 8, ModTime: time.Unix(1e9, 0)}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	zw.Close()
	return buf.String()
}

// TestBuildInstructions builds one Dockerfile using every instruction and
// checks the image's behaviour and config.
func TestBuildInstructions(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("busybox")
	ctx := writeContext(t, map[string]string{
		"Dockerfile": `# a comment
ARG BASE=busybox
FROM ${BASE} AS base
ONBUILD RUN echo triggered > /onbuild

FROM base
ARG WHO=world
ARG UNSET
ENV GREETING="hello ${WHO}" \
    EMPTY=""
LABEL org.example.name="demo app" version=1
WORKDIR /app
WORKDIR sub
COPY --chown=app:staff hello.txt ./
COPY dir/ /data/
COPY *.conf /etc/demo/
ADD archive.tar.gz /unpacked/
ADD plain.txt /added.txt
RUN echo "$GREETING" > greeting && echo "unset=[$UNSET]" >> greeting
RUN ["/bin/sh", "-c", "echo exec-form $WHO > exec.txt"]
SHELL ["/bin/sh", "-e", "-c"]
RUN echo shell-set > shell.txt
EXPOSE 8080 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --retries=2 CMD ["true"]
ONBUILD RUN echo child
USER app
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat greeting exec.txt shell.txt; id -u; pwd; cat /onbuild"]
`,
		"hello.txt":     "hello file\n",
		"dir/a.txt":     "a\n",
		"dir/sub/b.txt": "b\n",
		"one.conf":      "1\n",
		"two.conf":      "2\n",
		"archive.tar.gz": tarGz(t, map[string]string{
			"inside/x.txt": "from the archive\n",
		}),
		"plain.txt": "not an archive\n",
	})
	out, id := e.build("-t", "demo:v1", "--build-arg", "WHO=berth", ctx)
	for _, want := range []string{"STEP 1/", "STEP 3/", "RUN echo triggered > /onbuild"} {
		if !strings.Contains(out, want) {
			t.Errorf("build output lacks %q:\n%s", want, out)
		}
	}
	got := e.runOut("demo:v1")
	want := "hello berth\nunset=[]\nexec-form berth\nshell-set\n1000\n/app/sub\ntriggered"
	if got != want {
		t.Errorf("run demo:v1 =\n%s\nwant\n%s", got, want)
	}
	// The ID printed is the image's.
	if cfgID := e.imageConfig(id); cfgID.Config.User != "app" {
		t.Errorf("image %s has user %q", id, cfgID.Config.User)
	}
	// Files, owners and modes.
	ls := e.runOut("--user", "0", "--entrypoint", "/bin/sh", "demo:v1", "-c",
		"stat -c '%n %u:%g %a' /app/sub/hello.txt /data/a.txt /data/sub/b.txt /etc/demo/one.conf /etc/demo/two.conf /unpacked/inside/x.txt /added.txt; cat /unpacked/inside/x.txt /added.txt")
	wantLs := "/app/sub/hello.txt 1000:50 644\n/data/a.txt 0:0 644\n/data/sub/b.txt 0:0 644\n/etc/demo/one.conf 0:0 644\n/etc/demo/two.conf 0:0 644\n/unpacked/inside/x.txt 7:8 640\n/added.txt 0:0 644\nfrom the archive\nnot an archive"
	if ls != wantLs {
		t.Errorf("files:\n%s\nwant\n%s", ls, wantLs)
	}
	cfg := e.imageConfig("demo:v1").Config
	if strings.Join(cfg.Entrypoint, " ") != "/bin/sh -c" || len(cfg.Cmd) != 1 {
		t.Errorf("entrypoint %q cmd %q", cfg.Entrypoint, cfg.Cmd)
	}
	if cfg.WorkingDir != "/app/sub" || cfg.StopSignal != "SIGUSR1" || strings.Join(cfg.Shell, " ") != "/bin/sh -e -c" {
		t.Errorf("workdir %q stopsignal %q shell %q", cfg.WorkingDir, cfg.StopSignal, cfg.Shell)
	}
	if _, ok := cfg.ExposedPorts["8080/tcp"]; !ok || len(cfg.ExposedPorts) != 2 {
		t.Errorf("exposed ports %v", cfg.ExposedPorts)
	}
	if _, ok := cfg.ExposedPorts["53/udp"]; !ok {
		t.Errorf("exposed ports %v", cfg.ExposedPorts)
	}
	if _, ok := cfg.Volumes["/data"]; !ok {
		t.Errorf("volumes %v", cfg.Volumes)
	}
	if cfg.Labels["org.example.name"] != "demo app" || cfg.Labels["version"] != "1" {
		t.Errorf("labels %v", cfg.Labels)
	}
	if h := cfg.Healthcheck; h == nil || strings.Join(h.Test, " ") != "CMD true" || h.Interval != 5*time.Second || h.Retries != 2 {
		t.Errorf("healthcheck %+v", h)
	}
	if strings.Join(cfg.OnBuild, "|") != "RUN echo child" {
		t.Errorf("onbuild %q (the base's trigger must not be inherited)", cfg.OnBuild)
	}
	env := strings.Join(cfg.Env, "\n")
	if !strings.Contains(env, "GREETING=hello berth") || !strings.Contains(env, "EMPTY=") || strings.Contains(env, "WHO=") {
		t.Errorf("env %q: want ENV values and no ARG", cfg.Env)
	}
	// History: one entry per instruction that is not ARG, empty_layer on
	// the config-only ones, and as many layers as non-empty entries.
	c := e.imageConfig("demo:v1")
	layers := 0
	for _, h := range c.History {
		if !h.EmptyLayer {
			layers++
		}
	}
	if layers != len(c.RootFS.DiffIDs) {
		t.Errorf("%d non-empty history entries for %d layers", layers, len(c.RootFS.DiffIDs))
	}
	e.checkNoBuildLeftovers()
}

func TestBuildMultiStage(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("busybox")
	ctx := writeContext(t, map[string]string{
		"Dockerfile": `FROM busybox AS builder
RUN mkdir -p /out && echo built > /out/artifact && ln -s artifact /out/link

FROM busybox AS unused
RUN exit 1

FROM scratch
COPY --from=builder /bin/busybox /bin/busybox
COPY --from=0 /out/ /opt/
COPY --from=busybox /etc/passwd /etc/passwd
ENTRYPOINT ["/bin/busybox"]
CMD ["cat", "/opt/artifact", "/opt/link"]
`,
	})
	out, _ := e.build("-t", "multi", ctx)
	if strings.Contains(out, "exit 1") {
		t.Errorf("an unneeded stage was built:\n%s", out)
	}
	if got := e.runOut("multi"); got != "built\nbuilt" {
		t.Errorf("run multi = %q", got)
	}
	if got := e.runOut("multi", "readlink", "/opt/link"); got != "artifact" {
		t.Errorf("symlink copied as %q", got)
	}
	if got := e.runOut("multi", "grep", "-c", "app", "/etc/passwd"); got != "1" {
		t.Errorf("COPY --from an image: %q", got)
	}
	// --target builds a named stage only.
	_, err := e.berth("build", "--target", "unused", ctx)
	if err == nil || !strings.Contains(stderrOf(err), "exit") {
		t.Errorf("--target unused: %v", err)
	}
	e.checkNoBuildLeftovers()
}

// TestBuildScratchStatic builds FROM scratch with a static binary only.
func TestBuildScratchStatic(t *testing.T) {
	e := newEnv(t)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skip("no /bin/busybox")
	}
	ctx := writeContext(t, map[string]string{
		"Dockerfile": "FROM scratch\nCOPY busybox /busybox\nENTRYPOINT [\"/busybox\"]\nCMD [\"echo\", \"static\"]\n",
	})
	if err := os.WriteFile(filepath.Join(ctx, "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	e.build("-t", "static", ctx)
	if got := e.runOut("static"); got != "static" {
		t.Errorf("run static = %q", got)
	}
	if got := e.runOut("static", "sh", "-c", "echo $PATH"); !strings.Contains(got, "/usr/bin") {
		t.Errorf("scratch stage PATH = %q", got)
	}
}

func TestBuildDockerignore(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("busybox")
	ctx := writeContext(t, map[string]string{
		"Dockerfile":       "FROM busybox\nCOPY . /ctx/\nCMD [\"find\", \"/ctx\", \"-type\", \"f\"]\n",
		".dockerignore":    "# comment\n*.log\nsecret/\nbuild/*\n!build/keep.txt\n",
		"app.txt":          "app\n",
		"debug.log":        "noise\n",
		"secret/key":       "k\n",
		"build/drop.o":     "o\n",
		"build/keep.txt":   "keep\n",
		"src/main.go":      "package main\n",
		"src/deep/x.log":   "x\n",
		"src/deep/y.txt":   "y\n",
		"sub/.dockerfiles": "hidden\n",
	})
	e.build("-t", "ign", ctx)
	got := strings.Fields(e.runOut("ign"))
	want := map[string]bool{"/ctx/Dockerfile": true, "/ctx/.dockerignore": true, "/ctx/app.txt": true, "/ctx/build/keep.txt": true,
		"/ctx/src/main.go": true, "/ctx/src/deep/x.log": true, "/ctx/src/deep/y.txt": true, "/ctx/sub/.dockerfiles": true}
	for _, f := range got {
		if !want[f] {
			t.Errorf("%s was copied though ignored", f)
		}
		delete(want, f)
	}
	for f := range want {
		t.Errorf("%s is missing", f)
	}
	// An ignored file named explicitly is not found.
	bad := writeContext(t, map[string]string{"Dockerfile": "FROM busybox\nCOPY debug.log /\n", ".dockerignore": "*.log\n", "debug.log": "x"})
	if _, err := e.berth("build", bad); err == nil || !strings.Contains(stderrOf(err), "excluded by .dockerignore") {
		t.Errorf("COPY of an ignored file: %v", err)
	}
}

func TestBuildCache(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("busybox")
	ctx := writeContext(t, map[string]string{
		"Dockerfile": `FROM busybox
ENV A=1
RUN cat /proc/sys/kernel/random/uuid > /first
COPY data.txt /data.txt
RUN cat /data.txt > /copy && cat /proc/sys/kernel/random/uuid > /second
CMD ["cat", "/first", "/copy", "/second"]
`,
		"data.txt": "v1\n",
	})
	out1, id1 := e.build("-t", "cached", ctx)
	if strings.Contains(out1, "CACHED") {
		t.Errorf("first build used the cache:\n%s", out1)
	}
	run1 := strings.Fields(e.runOut("cached"))

	start := time.Now()
	out2, id2 := e.build("-t", "cached", ctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("fully cached rebuild took %v", d)
	}
	if n := strings.Count(out2, "CACHED"); n != 5 {
		t.Errorf("rebuild: %d steps CACHED, want 5:\n%s", n, out2)
	}
	if id1 != id2 {
		t.Errorf("fully cached rebuild changed the image ID: %s → %s", id1, id2)
	}

	// New content: the COPY and what follows run again, what precedes does not.
	if err := os.WriteFile(filepath.Join(ctx, "data.txt"), []byte("v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out3, id3 := e.build("-t", "cached", ctx)
	if n := strings.Count(out3, "CACHED"); n != 2 {
		t.Errorf("after a content change: %d steps CACHED, want 2 (ENV, first RUN):\n%s", n, out3)
	}
	if id3 == id2 {
		t.Error("content change kept the image ID")
	}
	run3 := strings.Fields(e.runOut("cached"))
	if run3[0] != run1[0] || run3[1] != "v2" || run3[2] == run1[2] {
		t.Errorf("after content change run = %v, before %v", run3, run1)
	}
	// Same content, new mtime: still cached.
	now := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(ctx, "data.txt"), now, now)
	if out, _ := e.build("-t", "cached", ctx); strings.Count(out, "CACHED") != 5 {
		t.Errorf("touching a file broke the cache:\n%s", out)
	}
	// --no-cache runs everything.
	out4, _ := e.build("--no-cache", "-t", "cached", ctx)
	if strings.Contains(out4, "CACHED") {
		t.Errorf("--no-cache used the cache:\n%s", out4)
	}
	if run4 := strings.Fields(e.runOut("cached")); run4[0] == run1[0] {
		t.Errorf("--no-cache did not rerun the first RUN: %v", run4)
	}
	// -q prints only the ID.
	if out := strings.TrimSpace(e.must("build", "-q", ctx)); !strings.HasPrefix(out, "sha256:") || strings.Contains(out, "\n") {
		t.Errorf("build -q printed %q", out)
	}
}

func TestBuildArgs(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("busybox")
	e.importBusybox("other/base:2")
	ctx := writeContext(t, map[string]string{
		"Dockerfile": `ARG REPO=busybox
ARG TAG=latest
FROM ${REPO}:${TAG}
ARG TAG
ARG COLOR=blue
ARG SIZE
ENV SHAPE=${SHAPE:-square}
RUN echo "tag=$TAG color=$COLOR size=${SIZE:-none}" > /args
LABEL color=$COLOR
CMD ["cat", "/args"]
`,
	})
	e.build("-t", "args:default", ctx)
	if got := e.runOut("args:default"); got != "tag=latest color=blue size=none" {
		t.Errorf("defaults: %q", got)
	}
	out, _ := e.build("-t", "args:over", "--build-arg", "COLOR=red", "--build-arg", "SIZE=xl",
		"--build-arg", "REPO=other/base", "--build-arg", "TAG=2", "--build-arg", "NOBODY=x", ctx)
	if got := e.runOut("args:over"); got != "tag=2 color=red size=xl" {
		t.Errorf("overrides: %q", got)
	}
	if !strings.Contains(out, "STEP 1/") || !strings.Contains(out, "FROM other/base:2") {
		t.Errorf("FROM did not use the meta ARGs:\n%s", out)
	}
	if c := e.imageConfig("args:over").Config; c.Labels["color"] != "red" {
		t.Errorf("label color=%q", c.Labels["color"])
	}
	// Changing an ARG value reruns the RUN that sees it.
	out, _ = e.build("-t", "args:over2", "--build-arg", "COLOR=green", ctx)
	if strings.Count(out, "CACHED") != 1 { // ENV only
		t.Errorf("ARG change: want only ENV cached:\n%s", out)
	}
}

func TestBuildFailingRun(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("busybox")
	ctx := writeContext(t, map[string]string{
		"Dockerfile": "FROM busybox\nRUN echo one > /one\n\nRUN echo before-fail && \\\n    exit 7\nRUN echo never\n",
	})
	_, err := e.berth("build", "-t", "broken", ctx)
	if err == nil {
		t.Fatal("build succeeded")
	}
	msg := stderrOf(err)
	for _, want := range []string{"step 3/4", "Dockerfile:4", "code 7", "exit 7"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	if exitCode(err) == 0 {
		t.Error("exit status 0")
	}
	if _, err := e.berth("image", "inspect", "broken"); err == nil {
		t.Error("a failed build tagged its image")
	}
	e.checkNoBuildLeftovers()

	// A syntax error names its line; nothing runs.
	bad := writeContext(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo ok\nCOPPY a b\n"})
	_, err = e.berth("build", bad)
	if msg := stderrOf(err); err == nil || !strings.Contains(msg, "line 3") || strings.Contains(msg, "STEP") {
		t.Errorf("syntax error: %v", err)
	}
	// A missing base image is a clear error.
	missing := writeContext(t, map[string]string{"Dockerfile": "FROM nosuch/image:1\nRUN true\n"})
	_, err = e.berth("build", missing)
	if msg := stderrOf(err); err == nil || !strings.Contains(msg, "nosuch/image:1") || !strings.Contains(msg, "not in berth's image store") {
		t.Errorf("missing base: %v", err)
	}
	// ADD of a URL is refused offline.
	url := writeContext(t, map[string]string{"Dockerfile": "FROM busybox\nADD https://example.com/x /x\n"})
	_, err = e.berth("build", url)
	if msg := stderrOf(err); err == nil || !strings.Contains(msg, "offline") {
		t.Errorf("ADD URL: %v", err)
	}
	e.checkNoBuildLeftovers()
}

// TestBuildOCIValid saves a built multi-layer image and loads it into
// podman, which runs it.
func TestBuildOCIValid(t *testing.T) {
	e := newEnv(t)
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman is not installed")
	}
	e.importBusybox("busybox")
	ctx := writeContext(t, map[string]string{
		"Dockerfile": "FROM busybox\nRUN echo layer > /l1 && rm /bin/vi\nCOPY f /f\nCMD [\"sh\", \"-c\", \"cat /l1 /f; test -e /bin/vi || echo vi-gone\"]\n",
		"f":          "file\n",
	})
	e.build("-t", "example.com/oci:v1", ctx)
	archive := filepath.Join(t.TempDir(), "oci.tar")
	e.must("save", "-o", archive, "example.com/oci:v1")
	proot := t.TempDir()
	pm := func(args ...string) (string, error) {
		cmd := exec.Command(podman, append([]string{"--root", filepath.Join(proot, "root"), "--runroot", filepath.Join(proot, "run"),
			"--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "none"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { pm("system", "reset", "-f") })
	if out, err := pm("load", "-i", archive); err != nil {
		t.Fatalf("podman load: %v\n%s", err, out)
	}
	out, err := pm("run", "--rm", "--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768", "example.com/oci:v1")
	if err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	if !strings.Contains(out, "layer\nfile\nvi-gone") {
		t.Errorf("podman run = %q", out)
	}
}

// TestBuildStdinHeredocChmod reads the Dockerfile from stdin and uses
// heredocs and COPY --chmod.
func TestBuildStdinHeredocChmod(t *testing.T) {
	e := newEnv(t)
	e.importBusybox("busybox")
	ctx := writeContext(t, map[string]string{"tool.sh": "#!/bin/sh\necho tool\n"})
	df := "FROM busybox\nENV WHO=world\nCOPY --chmod=750 tool.sh /usr/local/bin/\n" +
		"COPY <<EOF /etc/motd\nhello \"$WHO\"\nEOF\n" +
		"RUN <<EOF\nset -e\nstat -c %a /usr/local/bin/tool.sh > /mode\nEOF\n" +
		"CMD [\"sh\", \"-c\", \"tool.sh; cat /mode /etc/motd\"]\n"
	out, err := e.berthIn(strings.NewReader(df), "build", "-q", "-f", "-", "-t", "heredoc", ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "STEP") {
		t.Errorf("-q printed progress: %q", out)
	}
	if got := e.runOut("heredoc"); got != "tool\n750\nhello \"world\"" {
		t.Errorf("run heredoc = %q", got)
	}
}
