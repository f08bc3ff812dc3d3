package ocicli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
)

func execCommand(g *globals) *cobra.Command {
	var (
		process, pidFile, consoleSocket, cwd, user string
		env                                        []string
		detach, tty                                bool
		preserveFDs                                int
		ignored                                    []string
	)
	cmd := &cobra.Command{
		Use:   "exec [flags] ID [COMMAND [ARG...]]",
		Short: "Run another process in a running VM",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			rt, err := g.runtimeFor(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			var proc *specs.Process
			if process != "" {
				if proc, err = loadProcess(process); err != nil {
					return err
				}
			} else {
				if len(args) < 2 {
					return fmt.Errorf("exec %s: no command and no --process: %w", id, errdefs.ErrInvalidArgument)
				}
				proc = &specs.Process{Args: args[1:], Cwd: "/", Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
			}
			proc.Env = append(proc.Env, env...)
			proc.Terminal = proc.Terminal || tty
			if cwd != "" {
				proc.Cwd = cwd
			}
			if user != "" {
				u, gid, _ := strings.Cut(user, ":")
				uid, err := strconv.ParseUint(u, 10, 32)
				if err != nil {
					return fmt.Errorf("exec %s: --user %q: only uid[:gid] is supported: %w", id, user, errdefs.ErrInvalidArgument)
				}
				proc.User.UID = uint32(uid)
				if gid != "" {
					g, err := strconv.ParseUint(gid, 10, 32)
					if err != nil {
						return fmt.Errorf("exec %s: --user %q: %w", id, user, errdefs.ErrInvalidArgument)
					}
					proc.User.GID = uint32(g)
				}
			}
			execID := fmt.Sprintf("exec-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)

			if detach {
				if _, err := os.Stat(rt.Dir(id)); err != nil {
					return fmt.Errorf("exec in %s: %w", id, errdefs.ErrNotFound)
				}
				pf := filepath.Join(rt.Dir(id), execID+".json")
				b, _ := json.Marshal(proc)
				if err := os.WriteFile(pf, b, 0o600); err != nil {
					return err
				}
				defer os.Remove(pf)
				hargs := []string{"holder", "--exec-id", execID, "--process", pf}
				if consoleSocket != "" {
					hargs = append(hargs, "--console-socket", consoleSocket)
				}
				if proc.Terminal {
					hargs = append(hargs, "--tty")
				}
				pid, err := spawnHolder(g, append(hargs, id))
				if err != nil {
					return fmt.Errorf("exec in %s: %w", id, err)
				}
				return writePidFile(pidFile, pid)
			}

			stdio := runtime.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
			if proc.Terminal && term.IsTerminal(int(os.Stdin.Fd())) {
				stdio.Terminal = true
				if w, h, err := term.GetSize(int(os.Stdin.Fd())); err == nil {
					stdio.Size = &runtime.ConsoleSize{Width: uint16(w), Height: uint16(h)}
				}
				if old, err := term.MakeRaw(int(os.Stdin.Fd())); err == nil {
					defer term.Restore(int(os.Stdin.Fd()), old)
				}
			} else {
				proc.Terminal = false
			}
			p, err := rt.Exec(cmd.Context(), id, execID, proc, stdio)
			if err != nil {
				return err
			}
			if err := writePidFile(pidFile, os.Getpid()); err != nil {
				return err
			}
			st, err := p.Wait(cmd.Context())
			if err != nil {
				return err
			}
			return &exitError{Code: st.Code}
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.StringVarP(&process, "process", "p", "", "process.json to run")
	f.StringVar(&pidFile, "pid-file", "", "file for the PID standing for the process")
	f.StringVar(&consoleSocket, "console-socket", "", "unix socket to send the terminal's master to")
	f.StringVar(&cwd, "cwd", "", "working directory")
	f.StringVarP(&user, "user", "u", "", "uid[:gid]")
	f.StringArrayVarP(&env, "env", "e", nil, "environment variable KEY=VALUE")
	f.BoolVarP(&detach, "detach", "d", false, "leave a holder that exits with the process's code")
	f.BoolVarP(&tty, "tty", "t", false, "allocate a terminal")
	f.IntVar(&preserveFDs, "preserve-fds", 0, "ignored")
	f.StringArrayVar(&ignored, "cap", nil, "ignored")
	f.StringArrayVar(&ignored, "process-label", nil, "ignored")
	f.StringArrayVar(&ignored, "apparmor", nil, "ignored")
	f.BoolVar(new(bool), "no-new-privs", false, "ignored")
	return cmd
}
