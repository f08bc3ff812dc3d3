package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/cgroups"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/spec"
)

// DefaultCandidates are the runtimes Probe tries, fastest first.
var DefaultCandidates = []string{"crun", "runc"}

// probeCacheFormat is the cache's current format. 2: crun runs in a cgroup
// v1 view on hybrid hosts (it failed there before).
const probeCacheFormat = 2

// probeTimeout bounds one trial container.
const probeTimeout = 15 * time.Second

// probeCache is Probe's cache file: each candidate's verdict, valid while the
// binary's mtime and size and the boot are the same.
type probeCache struct {
	// Format changes with what a verdict means (probeCacheFormat): verdicts
	// of an older berth are probed again.
	Format     int                        `json:"format"`
	BootID     string                     `json:"bootID"`
	Candidates map[string]probeCacheEntry `json:"candidates"`
}

type probeCacheEntry struct {
	MTime   time.Time `json:"mtime"`
	Size    int64     `json:"size"`
	Version string    `json:"version"`
	OK      bool      `json:"ok"`
	Reason  string    `json:"reason"`
}

// Probe picks the first of candidates (DefaultCandidates when empty; names
// or paths) that can run a container here, by running a trivial one: the
// host's /usr, /bin, /lib… read-only in an empty rootfs running /bin/true, with berth's default
// spec (namespaces, seccomp, cgroups), as the backend would run it (crun on
// a hybrid host in a cgroup v1 view). It returns the chosen binary's path
// and a reason that also explains every candidate skipped, e.g. "skipped
// crun: not installed (apt-get install crun)".
//
// Verdicts are cached in cacheFile ("" for no cache) per binary path,
// modification time and size, and boot, so that later calls run nothing.
// No usable candidate is an error wrapping errdefs.ErrUnavailable.
func Probe(ctx context.Context, candidates []string, cacheFile string) (chosen, reason string, err error) {
	if len(candidates) == 0 {
		candidates = DefaultCandidates
	}
	bootID := readBootID()
	cache := loadProbeCache(cacheFile, bootID)
	dirty := false
	var skipped []string
	for _, c := range candidates {
		path, err := lookBinary(c)
		if err != nil {
			hint := "not installed"
			if pkg, ok := packages[filepath.Base(c)]; ok {
				hint += " (apt-get install " + pkg + ")"
			}
			skipped = append(skipped, c+": "+hint)
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: %v", c, err))
			continue
		}
		e, ok := cache.Candidates[path]
		if !ok || !e.MTime.Equal(fi.ModTime()) || e.Size != fi.Size() {
			e = probeOne(ctx, path)
			if ctx.Err() != nil {
				return "", "", fmt.Errorf("probe OCI runtimes: %w", ctx.Err())
			}
			e.MTime, e.Size = fi.ModTime(), fi.Size()
			cache.Candidates[path] = e
			dirty = true
		}
		label := strings.TrimSpace(filepath.Base(path) + " " + e.Version)
		if !e.OK {
			skipped = append(skipped, label+": "+e.Reason)
			continue
		}
		chosen, reason = path, label+": "+e.Reason
		break
	}
	if dirty && cacheFile != "" {
		if err := saveProbeCache(cacheFile, cache); err != nil {
			return "", "", fmt.Errorf("probe OCI runtimes: %w", err)
		}
	}
	if len(skipped) > 0 {
		if reason != "" {
			reason += "; "
		}
		reason += "skipped " + strings.Join(skipped, "; ")
	}
	if chosen == "" {
		return "", reason, fmt.Errorf("probe OCI runtimes %s: none works: %s: %w", strings.Join(candidates, ", "), reason, errdefs.ErrUnavailable)
	}
	return chosen, reason, nil
}

func readBootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

func loadProbeCache(file, bootID string) probeCache {
	fresh := probeCache{Format: probeCacheFormat, BootID: bootID, Candidates: map[string]probeCacheEntry{}}
	if file == "" {
		return fresh
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fresh
	}
	var c probeCache
	if json.Unmarshal(b, &c) != nil || c.Format != probeCacheFormat || c.BootID != bootID || c.Candidates == nil {
		return fresh
	}
	return c
}

// saveProbeCache writes the cache atomically (temp file, then rename).
func saveProbeCache(file string, c probeCache) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode probe cache: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("write probe cache: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".probe-*")
	if err != nil {
		return fmt.Errorf("write probe cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write probe cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write probe cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("write probe cache: %w", err)
	}
	return nil
}

// binaryVersion returns the version from `<bin> --version`'s first line
// ("runc version 1.1.5+ds1" gives "1.1.5+ds1").
func binaryVersion(ctx context.Context, path string) string {
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return ""
	}
	first, _, _ := strings.Cut(string(out), "\n")
	if _, v, ok := strings.Cut(first, "version "); ok {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(first)
}

// probeOne runs the trial container with the binary at path.
func probeOne(ctx context.Context, path string) probeCacheEntry {
	e := probeCacheEntry{Version: binaryVersion(ctx, path)}
	fail := func(err error) probeCacheEntry {
		e.Reason = err.Error()
		return e
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "berth-probe-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	id := fmt.Sprintf("berth-probe-%d-%d", os.Getpid(), time.Now().UnixNano())
	cgroupsPath := "/" + id
	rootfs := filepath.Join(dir, "rootfs")
	hostMounts, err := hostRootfs(rootfs)
	if err != nil {
		return fail(err)
	}
	s, err := spec.Generate(ctx,
		spec.WithRootfs(rootfs, true),
		spec.WithMounts(hostMounts),
		spec.WithProcessArgs("/bin/true"),
		spec.WithCgroupsPath(cgroupsPath),
		spec.WithPidsLimit(16),
	)
	if err != nil {
		return fail(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return fail(err)
	}
	bundle := filepath.Join(dir, "bundle")
	if err := os.Mkdir(bundle, 0o700); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return fail(err)
	}
	mode := cgroups.DetectMode()
	name := filepath.Base(path)
	r := &Runtime{binary: path, name: name, root: filepath.Join(dir, "state"), opts: options{tempDir: dir}, v1View: needsV1View(name, mode)}
	logPath := filepath.Join(dir, "log")
	cmd := exec.CommandContext(ctx, path, r.globalArgs(logPath, []string{"run", "--bundle", bundle, id})...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	runErr := r.runCmd(cmd)
	elapsed := time.Since(start)
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_, _ = r.command(cctx, "delete", id, "delete", "--force", id)
		_ = cgroups.Remove(cgroupsPath) // best effort, when the runtime left it
	}()
	if runErr != nil {
		e.Reason = r.runtimeMessage("run", logPath, stderr.Bytes(), runErr)
		return e
	}
	e.OK = true
	e.Reason = fmt.Sprintf("ran a test container in %v", elapsed.Round(time.Millisecond))
	if r.v1View {
		e.Reason += " (cgroups are hybrid, which crun refuses: berth runs it in a private mount namespace without " + unifiedMount + ", where it uses the v1 hierarchies)"
	}
	return e
}

// hostRootfs makes rootfs an empty directory that shows the host's programs:
// it returns read-only bind mounts of /usr and of the top-level /bin, /sbin,
// /lib* directories, and copies those that are symlinks (merged /usr). The
// host's / itself cannot serve: pivot_root refuses the current root.
func hostRootfs(rootfs string) ([]specs.Mount, error) {
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return nil, err
	}
	mounts := []specs.Mount{bindRO("/usr")}
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
			continue
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(d)
			if err != nil {
				return nil, err
			}
			if err := os.Symlink(target, filepath.Join(rootfs, d)); err != nil {
				return nil, err
			}
		case fi.IsDir():
			mounts = append(mounts, bindRO(d))
		}
	}
	return mounts, nil
}

func bindRO(p string) specs.Mount {
	return specs.Mount{Destination: p, Type: "bind", Source: p, Options: []string{"rbind", "ro", "nosuid", "nodev"}}
}
