package oci

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// crun's leftovers. `crun run --detach` and `crun exec --detach` fork twice
// to detach: the crun binary we start forks a child, which forks the process
// that starts the container and exits; that last crun process is the parent
// of the container's process and ends just after the binary we started has
// returned. Being a child subreaper, the caller adopts both: the container's
// process once its crun parent has exited (until then wait4 on it fails with
// ECHILD), and that crun process itself, whose status nobody else collects.
// settle waits for the first and reaps the second. runc leaves nothing of
// the kind (the wait is then a single check).

// adoptTimeout bounds the wait for a started process to become the
// caller's child.
const adoptTimeout = 5 * time.Second

var (
	// startMu orders starting runtime binaries against reaping adopted
	// ones, so that a binary just started is registered in invocations
	// before a scan could take it for a leftover.
	startMu sync.Mutex
	// invocations are the runtime binaries started by runCmd and not yet
	// waited for; owned are the started processes a process value reaps.
	invocations = map[int]bool{}
	owned       = map[int]bool{}
)

// startRegistered starts cmd and registers it until unregister.
func startRegistered(cmd *exec.Cmd) error {
	startMu.Lock()
	defer startMu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	invocations[cmd.Process.Pid] = true
	return nil
}

// waitRegistered waits for a cmd started by startRegistered.
func waitRegistered(cmd *exec.Cmd) error {
	err := cmd.Wait()
	startMu.Lock()
	delete(invocations, cmd.Process.Pid)
	startMu.Unlock()
	return err
}

// own registers pid, a process the runtime has started, as owned (until
// disown) so that no scan for leftovers reaps it.
func own(pid int) {
	startMu.Lock()
	owned[pid] = true
	startMu.Unlock()
}

// settle is called, off the start's path, for an owned process pid: it
// waits until pid is the caller's child and reaps the runtime's leftovers.
func (r *Runtime) settle(pid int) error {
	self := os.Getpid()
	deadline := time.Now().Add(adoptTimeout)
	for delay := 50 * time.Microsecond; ; delay = min(2*delay, 5*time.Millisecond) {
		ppid, _, err := procStat(pid)
		if err != nil {
			return fmt.Errorf("process %d: %w", pid, err)
		}
		if ppid == self {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d: still a child of %d after %v, not of this process (is it a child subreaper?)", pid, ppid, adoptTimeout)
		}
		time.Sleep(delay)
	}
	r.reapLeftovers()
	return nil
}

// reapLeftovers reaps the runtime's leftovers, waiting a little for those
// still running: after a start, or a failed one.
func (r *Runtime) reapLeftovers() {
	// A leftover may end a moment after the process was adopted.
	deadline := time.Now().Add(time.Second)
	for delay := 50 * time.Microsecond; ; delay = min(2*delay, 5*time.Millisecond) {
		startMu.Lock()
		live := r.reapLeftoversLocked()
		startMu.Unlock()
		if live == 0 || time.Now().After(deadline) {
			return
		}
		time.Sleep(delay)
	}
}

// disown forgets pid once reaped.
func disown(pid int) {
	startMu.Lock()
	delete(owned, pid)
	startMu.Unlock()
}

// reapLeftoversLocked reaps the caller's children that are exited runtime
// binaries (by name) it neither started nor owns, and returns how many such
// are still running. startMu must be held.
func (r *Runtime) reapLeftoversLocked() (live int) {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	comm := r.name
	if len(comm) > 15 { // TASK_COMM_LEN - 1
		comm = comm[:15]
	}
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for f := range bytes.FieldsSeq(b) {
			pid, err := strconv.Atoi(string(f))
			if err != nil || invocations[pid] || owned[pid] {
				continue
			}
			_, st, err := procStat(pid)
			if err != nil || st.comm != comm {
				continue
			}
			if st.state != 'Z' {
				live++
				continue
			}
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
	}
	return live
}

type procState struct {
	comm  string
	state byte
}

// procStat reads pid's parent, name and state from /proc/PID/stat.
func procStat(pid int) (int, procState, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, procState{}, err
	}
	// pid (comm) state ppid ...
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return 0, procState{}, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	rest := bytes.Fields(b[end+1:])
	if len(rest) < 2 || len(rest[0]) != 1 {
		return 0, procState{}, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	ppid, err := strconv.Atoi(string(rest[1]))
	if err != nil {
		return 0, procState{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return ppid, procState{comm: string(b[open+1 : end]), state: rest[0][0]}, nil
}
