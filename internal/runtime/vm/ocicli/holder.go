package ocicli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/creack/pty"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/runtime/vm"
)

// The holder is berth-vm re-executed, detached, to own a VM (for create)
// or an exec'd process (for exec --detach): the caller waits on fd 3 for
// "ok" or an error, writes the holder's PID to --pid-file and returns.

const readyFD = 3

// holderFile records the holder of VM id, for state.
type holderFile struct {
	Pid         int               `json:"pid"`
	Bundle      string            `json:"bundle"`
	Created     time.Time         `json:"created"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func holderPath(rt *vm.Runtime, id string) string { return filepath.Join(rt.Dir(id), "oci.json") }

// spawnHolder starts the holder with args and returns its PID once it is
// ready, or the error it reported.
func spawnHolder(g *globals, args []string) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	full := append([]string{"--root", g.root, "--kernel-dir", g.kernelDir, "--accel", g.accel,
		"--cache-dir", g.cacheDir, "--boot-timeout", g.bootTimeout.String(), "--log", g.log, "--log-format", g.logFormat}, args...)
	if g.agent != "" {
		full = append([]string{"--agent", g.agent}, full...)
	}
	cmd := exec.Command(exe, full...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return 0, fmt.Errorf("start holder: %w", err)
	}
	w.Close()
	msg, _ := io.ReadAll(r)
	if s := strings.TrimSpace(string(msg)); s != "ok" {
		_ = cmd.Wait()
		if s == "" {
			s = "holder exited without a word"
		}
		return 0, errors.New(s)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, nil
}

func writePidFile(path string, pid int) error {
	if path == "" {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprint(pid)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

type holderOpts struct {
	bundle, consoleSocket, execID, process string
	tty                                    bool
}

func holderCommand(g *globals) *cobra.Command {
	var o holderOpts
	cmd := &cobra.Command{
		Use:    "holder ID",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runHolder(g, o, args[0])
		},
	}
	cmd.Flags().StringVar(&o.bundle, "bundle", "", "")
	cmd.Flags().StringVar(&o.consoleSocket, "console-socket", "", "")
	cmd.Flags().StringVar(&o.execID, "exec-id", "", "")
	cmd.Flags().StringVar(&o.process, "process", "", "")
	cmd.Flags().BoolVar(&o.tty, "tty", false, "")
	return cmd
}

func runHolder(g *globals, o holderOpts, id string) error {
	// Inherited without close-on-exec: keep it from QEMU, or the caller
	// would wait for QEMU to exit.
	syscall.CloseOnExec(readyFD)
	ready := os.NewFile(readyFD, "ready")
	fail := func(err error) error {
		fmt.Fprintf(ready, "%v\n", err)
		ready.Close()
		g.logError(err)
		return &exitError{Code: 1}
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	rt, err := g.runtimeFor(g.logWriter())
	if err != nil {
		return fail(err)
	}
	stdio := runtime.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	var console *os.File
	if o.consoleSocket != "" {
		if console, err = sendConsole(o.consoleSocket); err != nil {
			return fail(err)
		}
		stdio = runtime.IO{Stdin: console, Stdout: console, Terminal: true}
		if ws, err := pty.GetsizeFull(console); err == nil && ws.Cols > 0 {
			stdio.Size = &runtime.ConsoleSize{Width: ws.Cols, Height: ws.Rows}
		}
	}
	ctx := context.Background()
	var p runtime.Process
	if o.execID == "" {
		p, err = rt.Create(ctx, id, o.bundle, stdio)
		if err == nil {
			err = saveHolder(rt, id, o.bundle)
		}
	} else {
		var proc *specs.Process
		if proc, err = loadProcess(o.process); err == nil {
			proc.Terminal = proc.Terminal || o.tty
			stdio.Terminal = stdio.Terminal && proc.Terminal
			p, err = rt.Exec(ctx, id, o.execID, proc, stdio)
		}
	}
	if err != nil {
		return fail(err)
	}
	fmt.Fprintln(ready, "ok")
	ready.Close()

	forwardSignals(ctx, p, console)
	st, err := p.Wait(ctx)
	if err != nil {
		g.logError(err)
		return &exitError{Code: 255}
	}
	if o.execID == "" && p.Pid() > 0 {
		// Let the guest power off by itself before we go (QEMU dies with us).
		deadline := time.Now().Add(5 * time.Second)
		for syscall.Kill(p.Pid(), 0) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return &exitError{Code: st.Code}
}

func saveHolder(rt *vm.Runtime, id, bundle string) error {
	h := holderFile{Pid: os.Getpid(), Bundle: bundle, Created: time.Now().UTC()}
	if b, err := os.ReadFile(filepath.Join(bundle, "config.json")); err == nil {
		var s specs.Spec
		if json.Unmarshal(b, &s) == nil {
			h.Annotations = s.Annotations
		}
	}
	b, _ := json.Marshal(h)
	return os.WriteFile(holderPath(rt, id), b, 0o600)
}

// forwardSignals passes the holder's signals on to the workload and, with a
// console, its window size changes.
func forwardSignals(ctx context.Context, p runtime.Process, console *os.File) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	go func() {
		for s := range sigs {
			sig := s.(syscall.Signal)
			if sig == syscall.SIGWINCH {
				if console != nil {
					if ws, err := pty.GetsizeFull(console); err == nil {
						_ = p.Resize(ctx, runtime.ConsoleSize{Width: ws.Cols, Height: ws.Rows})
					}
				}
				continue
			}
			_ = p.Signal(ctx, sig)
		}
	}()
}

// sendConsole makes a pty, sends its master to the console socket (runc's
// protocol: SCM_RIGHTS with the pty's name as data) and returns the slave,
// in raw mode (the guest's own pty does the line discipline), as the
// holder's controlling terminal so that resizes arrive as SIGWINCH.
func sendConsole(path string) (*os.File, error) {
	ptm, pts, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("open console pty: %w", err)
	}
	defer ptm.Close()
	conn, err := net.Dial("unix", path)
	if err != nil {
		pts.Close()
		return nil, fmt.Errorf("connect to console socket %s: %w", path, err)
	}
	defer conn.Close()
	uc := conn.(*net.UnixConn)
	if _, _, err := uc.WriteMsgUnix([]byte(ptm.Name()), unix.UnixRights(int(ptm.Fd())), nil); err != nil {
		pts.Close()
		return nil, fmt.Errorf("send console to %s: %w", path, err)
	}
	if _, err := term.MakeRaw(int(pts.Fd())); err != nil {
		pts.Close()
		return nil, fmt.Errorf("console raw mode: %w", err)
	}
	if err := unix.IoctlSetInt(int(pts.Fd()), unix.TIOCSCTTY, 0); err == nil {
		_ = unix.IoctlSetPointerInt(int(pts.Fd()), unix.TIOCSPGRP, unix.Getpgrp())
	}
	return pts, nil
}

func loadProcess(path string) (*specs.Process, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read process %s: %w", path, err)
	}
	defer f.Close()
	var p specs.Process
	if err := json.NewDecoder(bufio.NewReader(f)).Decode(&p); err != nil {
		return nil, fmt.Errorf("read process %s: %w", path, err)
	}
	return &p, nil
}
