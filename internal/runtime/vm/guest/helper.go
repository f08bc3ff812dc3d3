package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

// The exec helper is the agent binary re-executed (through /proc/self/exe,
// which works after the root switch) as the first stage of every workload
// process: it applies what fork+exec alone cannot (rlimits, cgroup, groups,
// umask, no_new_privs) and then execs the program. A failure before the exec
// is written as a JSON agentproto.Error to fd 3, which closes on exec, so an
// empty read on the agent's side means the program runs.

const helperEnv = "BERTH_EXEC"

type helperConfig struct {
	Process agentproto.Process `json:"process"`
	Cgroup  string             `json:"cgroup,omitempty"`
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

func helperMain() {
	errf := os.NewFile(3, "errpipe")
	unix.CloseOnExec(3)
	fail := func(code int, notFound bool, err error) {
		_ = json.NewEncoder(errf).Encode(agentproto.Error{Message: err.Error(), NotFound: notFound})
		os.Exit(code)
	}
	var c helperConfig
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &c); err != nil {
		fail(127, false, fmt.Errorf("exec helper: config: %w", err))
	}
	if err := prepare(c); err != nil {
		fail(127, false, err)
	}
	p := c.Process
	env := p.Env
	path, err := lookPath(p.Args[0], env)
	if err != nil {
		fail(127, true, err)
	}
	err = syscall.Exec(path, p.Args, env)
	code := 127
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOEXEC) {
		code = 126
	}
	fail(code, errors.Is(err, syscall.ENOENT), fmt.Errorf("exec %s: %w", p.Args[0], err))
}

func prepare(c helperConfig) error {
	p := c.Process
	if c.Cgroup != "" {
		if err := os.WriteFile(filepath.Join(c.Cgroup, "cgroup.procs"), []byte("0"), 0); err != nil {
			return fmt.Errorf("join cgroup %s: %w", c.Cgroup, err)
		}
	}
	for _, r := range p.Rlimits {
		res, ok := rlimits[r.Type]
		if !ok {
			return fmt.Errorf("unknown rlimit %q", r.Type)
		}
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: r.Soft, Max: r.Hard}); err != nil {
			return fmt.Errorf("set %s: %w", r.Type, err)
		}
	}
	if p.Umask != nil {
		unix.Umask(int(*p.Umask))
	}
	groups := make([]int, len(p.AdditionalGids))
	for i, g := range p.AdditionalGids {
		groups[i] = int(g)
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("set groups: %w", err)
	}
	if err := syscall.Setgid(int(p.GID)); err != nil {
		return fmt.Errorf("set gid %d: %w", p.GID, err)
	}
	if err := syscall.Setuid(int(p.UID)); err != nil {
		return fmt.Errorf("set uid %d: %w", p.UID, err)
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := os.Chdir(cwd); err != nil {
		return fmt.Errorf("change to working directory: %w", err)
	}
	if p.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	return nil
}

// lookPath resolves file against the PATH of the process's own env.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		f := filepath.Join(dir, file)
		if st, err := os.Stat(f); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return f, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", file)
}
