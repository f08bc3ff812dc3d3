package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
)

// Files in a VM's state directory.
const (
	stateFileName  = "state.json"
	qmpSocket      = "qmp.sock"
	agentSocket    = "agent.sock"
	virtiofsSocket = "vfs.sock"
	ctlSocket      = "ctl.sock"
	consoleLog     = "console.log"
	qemuLog        = "qemu.log"
	virtiofsdLog   = "virtiofsd.log"
)

// procRef names a host process by PID and start time, so a recycled PID is
// never mistaken for it (runc's refreshState does the same).
type procRef struct {
	Pid   int    `json:"pid,omitempty"`
	Start uint64 `json:"start,omitempty"`
}

// procStat reads a process's state letter and start time (fields 3 and 22
// of /proc/PID/stat).
func procStat(pid int) (state string, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return "", 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0], start, err
}

func refOf(pid int) procRef {
	_, st, _ := procStat(pid)
	return procRef{Pid: pid, Start: st}
}

// alive reports whether the process still runs (a zombie counts as gone).
func (r procRef) alive() bool {
	if r.Pid <= 0 {
		return false
	}
	state, start, err := procStat(r.Pid)
	return err == nil && start == r.Start && state != "Z" && state != "X"
}

func (r procRef) signal(sig syscall.Signal) {
	if r.alive() {
		_ = syscall.Kill(r.Pid, sig)
	}
}

// stateFile is a VM's state.json.
type stateFile struct {
	ID        string         `json:"id"`
	Bundle    string         `json:"bundle"`
	Status    runtime.Status `json:"status"`
	Created   time.Time      `json:"created"`
	Owner     procRef        `json:"owner"`
	QEMU      procRef        `json:"qemu"`
	Virtiofsd procRef        `json:"virtiofsd"`
	// Shares are the virtiofsd of each share (shares.go).
	Shares []procRef `json:"shares,omitempty"`
}

// writeState replaces dir/state.json atomically.
func writeState(dir string, st stateFile) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".state-*")
	if err != nil {
		return fmt.Errorf("save state of vm %s: %w", st.ID, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save state of vm %s: %w", st.ID, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save state of vm %s: %w", st.ID, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, stateFileName)); err != nil {
		return fmt.Errorf("save state of vm %s: %w", st.ID, err)
	}
	return nil
}

func readState(dir, id string) (stateFile, error) {
	var st stateFile
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if os.IsNotExist(err) {
		return st, fmt.Errorf("vm %s: %w", id, errdefs.ErrNotFound)
	}
	if err != nil {
		return st, fmt.Errorf("read state of vm %s: %w", id, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("read state of vm %s: %v: %w", id, err, errdefs.ErrCorrupt)
	}
	return st, nil
}

// tail returns the last n lines of the file at path (read from its last 16 KiB).
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 16 << 10
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, st.Size()-window)
	buf := make([]byte, st.Size()-off)
	n2, _ := f.ReadAt(buf, off)
	lines := strings.Split(strings.TrimRight(string(buf[:n2]), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// List returns the IDs of the VMs that have state under this Runtime's
// state directory, whoever owns them: what a prune compares with its records.
func (r *Runtime) List(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(r.o.stateDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	var ids []string
	for _, ent := range ents {
		if st, err := readState(filepath.Join(r.o.stateDir, ent.Name()), ent.Name()); err == nil && st.ID != "" {
			ids = append(ids, st.ID)
		}
	}
	return ids, nil
}
