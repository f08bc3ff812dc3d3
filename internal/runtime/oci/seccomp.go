package oci

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Compiled seccomp filters, cached.
//
// Compiling Docker's seccomp profile with libseccomp is most of a bare crun
// start (measured here: ~15 ms of CPU out of ~28 ms). crun accepts an
// already compiled filter in the annotation run.oci.seccomp_bpf_data
// (base64 of the raw sock_filter array; crun then skips the spec's seccomp
// section) but offers no way to produce one. berth therefore learns it from
// crun itself: the first time a profile is seen, after that container has
// started, the backend creates (never starts) a throwaway container with
// the same profile, reads the filter crun installed in its init with
// PTRACE_SECCOMP_GET_FILTER, and caches it keyed by the profile, the crun
// binary and the architecture. Later containers with the same profile get
// the annotation and crun installs the very same program without
// compiling. Nothing in Go compiles or edits BPF: what runs is always
// libseccomp's own output for that profile. No well-kept Go library does
// this (libseccomp-golang needs cgo, which berth avoids), hence this file.

// bpfAnnotation is crun's annotation for a precompiled filter.
const bpfAnnotation = "run.oci.seccomp_bpf_data"

// bpfKey names the cache entry for profile p under this runtime binary.
func (r *Runtime) bpfKey(p *specs.LinuxSeccomp) (string, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(r.binary)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s %d %d %s\n", r.binary, st.Size(), st.ModTime().UnixNano(), goruntime.GOARCH)
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

func (r *Runtime) bpfDir() string { return r.root + ".seccomp" }

// PrepareSpec gives crun the cached filter for s's seccomp profile (the
// annotation), before the caller writes s as a bundle's config.json. A
// profile not cached yet is noted: the next Start learns it. Any error
// leaves s as it was (crun then compiles, as without a cache).
func (r *Runtime) PrepareSpec(s *specs.Spec) {
	if r.name != "crun" || s.Linux == nil || s.Linux.Seccomp == nil {
		return
	}
	if _, ok := s.Annotations[bpfAnnotation]; ok {
		return // the caller chose a filter
	}
	key, err := r.bpfKey(s.Linux.Seccomp)
	if err != nil {
		return
	}
	data, err := os.ReadFile(filepath.Join(r.bpfDir(), key))
	if err != nil {
		if os.IsNotExist(err) {
			r.mu.Lock()
			r.toLearn[key] = true
			r.mu.Unlock()
		}
		return
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[bpfAnnotation] = string(data)
}

// takeLearn reports whether PrepareSpec found profile key uncached, and
// forgets it.
func (r *Runtime) takeLearn(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok := r.toLearn[key]
	delete(r.toLearn, key)
	return ok
}

// learnPending reports whether some profile awaits learning.
func (r *Runtime) learnPending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.toLearn) > 0
}

// learnFilter caches the filter crun compiles for the bundle's profile, if
// PrepareSpec found it uncached, by creating a throwaway container from the
// same spec and reading the filter its init has installed. Failures only
// mean no cache entry.
func (r *Runtime) learnFilter(ctx context.Context, bundle string) error {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s.Linux == nil || s.Linux.Seccomp == nil || s.Root == nil || s.Process == nil {
		return nil
	}
	key, err := r.bpfKey(s.Linux.Seccomp)
	if err != nil || !r.takeLearn(key) {
		return err
	}
	if err := os.MkdirAll(r.bpfDir(), 0o700); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(r.bpfDir(), "capture-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The same profile and process, nothing that touches the host or the
	// workload: no bind mounts, hooks, resources, joined namespaces, and a
	// read-only view of the same root filesystem.
	if !filepath.IsAbs(s.Root.Path) {
		s.Root.Path = filepath.Join(bundle, s.Root.Path)
	}
	s.Root.Readonly = true
	s.Process.Terminal = false
	s.Hooks, s.Annotations = nil, nil
	var mounts []specs.Mount
	for _, m := range s.Mounts {
		if m.Type != "bind" {
			mounts = append(mounts, m)
		}
	}
	s.Mounts = mounts
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	id := "berth-seccomp-" + hex.EncodeToString(rnd[:])
	s.Linux.CgroupsPath = "/berth/" + id // beside the workloads; crun delete removes it
	s.Linux.Resources = nil
	for i := range s.Linux.Namespaces {
		s.Linux.Namespaces[i].Path = ""
	}
	out, err := json.Marshal(&s)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), out, 0o600); err != nil {
		return err
	}

	pidFile, logPath := filepath.Join(dir, "pid"), filepath.Join(dir, "log")
	// Stdio is /dev/null: the init keeps its descriptors until deleted.
	cmd := exec.CommandContext(ctx, r.binary, r.globalArgs(logPath, []string{"create", "--bundle", dir, "--pid-file", pidFile, id})...)
	if err := r.runCmd(cmd); err != nil {
		r.reapLeftovers()
		return r.runtimeError("create", id, logPath, nil, err)
	}
	defer func() { _, _ = r.command(context.WithoutCancel(ctx), "delete", id, "delete", "--force", id) }()
	pid, err := readPid(pidFile)
	if err != nil {
		return err
	}
	own(pid)
	defer func() {
		_ = unix.Kill(pid, unix.SIGKILL)
		if r.settle(pid) == nil {
			_, _ = reap(pid)
		}
		disown(pid)
	}()
	if n, err := seccompFilters(pid); err != nil || n != 1 {
		return fmt.Errorf("capture seccomp filter of %d: %d filters installed (%v); want crun's only", pid, n, err)
	}
	prog, err := captureFilter(pid)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "filter")
	if err := os.WriteFile(tmp, []byte(base64.StdEncoding.EncodeToString(prog)), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(r.bpfDir(), key))
}

// seccompFilters reads how many seccomp filters pid has.
func seccompFilters(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Seccomp_filters:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no Seccomp_filters in /proc/%d/status", pid)
}

// ptraceSeccompGetFilter is PTRACE_SECCOMP_GET_FILTER (linux/ptrace.h).
const ptraceSeccompGetFilter = 0x420c

// captureFilter returns pid's newest seccomp filter as raw sock_filter
// bytes. It attaches with PTRACE_SEIZE from one locked OS thread (ptrace
// requests must come from the tracer thread), stops pid, reads the filter
// and detaches; pid never notices.
func captureFilter(pid int) ([]byte, error) {
	type result struct {
		prog []byte
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		defer goruntime.UnlockOSThread()
		prog, err := captureLocked(pid)
		ch <- result{prog, err}
	}()
	r := <-ch
	return r.prog, r.err
}

func captureLocked(pid int) ([]byte, error) {
	if err := unix.PtraceSeize(pid); err != nil {
		return nil, fmt.Errorf("ptrace %d: %w", pid, err)
	}
	defer unix.PtraceDetach(pid)
	if err := unix.PtraceInterrupt(pid); err != nil {
		return nil, fmt.Errorf("ptrace interrupt %d: %w", pid, err)
	}
	// Poll with a deadline: a stop that another waiter consumed, or a
	// process that will not stop, must not hang the caller's start.
	var ws unix.WaitStatus
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := unix.Wait4(pid, &ws, unix.WALL|unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("wait for %d to stop: %w", pid, err)
		}
		if got == pid {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("process %d did not stop for ptrace", pid)
		}
		time.Sleep(time.Millisecond)
	}
	if !ws.Stopped() {
		return nil, fmt.Errorf("process %d did not stop: %v", pid, ws)
	}
	n, _, errno := syscall.Syscall6(syscall.SYS_PTRACE, ptraceSeccompGetFilter, uintptr(pid), 0, 0, 0, 0)
	if errno != 0 {
		return nil, fmt.Errorf("read seccomp filter of %d: %w", pid, errno)
	}
	if n == 0 || n > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("read seccomp filter of %d: %d instructions", pid, n)
	}
	buf := make([]unix.SockFilter, n)
	m, _, errno := syscall.Syscall6(syscall.SYS_PTRACE, ptraceSeccompGetFilter, uintptr(pid), 0, uintptr(unsafe.Pointer(&buf[0])), 0, 0)
	if errno != 0 || m != n {
		return nil, fmt.Errorf("read seccomp filter of %d: %d of %d instructions: %v", pid, m, n, errno)
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*int(unsafe.Sizeof(buf[0]))), nil
}

// PruneCaptures removes what a filter capture killed halfway (by a SIGKILL
// of its caller) can leave: the throwaway container's runtime state and
// cgroup, and its bundle. It returns the IDs of the containers removed.
func (r *Runtime) PruneCaptures(ctx context.Context) []string {
	var removed []string
	ents, _ := os.ReadDir(r.root)
	for _, e := range ents {
		if id := e.Name(); strings.HasPrefix(id, "berth-seccomp-") {
			if _, err := r.command(ctx, "delete", id, "delete", "--force", id); err == nil || os.IsNotExist(err) {
				removed = append(removed, id)
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(r.bpfDir(), "capture-*"))
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
	if len(removed) > 0 {
		r.reapLeftovers() // a killed init may be our child (CLONE_PARENT)
	}
	return removed
}
