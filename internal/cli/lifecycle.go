package cli

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/berthdev/berth/internal/engine"
	"github.com/spf13/cobra"
)

// forEach runs fn for every named workload, printing each name on success
// like Docker, and fails if any failed.
func forEach(names []string, fn func(name string) error) error {
	var failed error
	for _, n := range names {
		if err := fn(n); err != nil {
			fmt.Fprintln(os.Stderr, "berth:", err)
			failed = withCode(1, nil)
			continue
		}
		fmt.Println(n)
	}
	return failed
}

func startCmd(g *globals) *cobra.Command {
	var attachFlag, interactive bool
	cmd := &cobra.Command{
		Use:   "start [-a] CONTAINER...",
		Short: "Start created or stopped workloads",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			if attachFlag {
				if len(args) != 1 {
					return errors.New("start -a takes exactly one container")
				}
				c, err := e.Inspect(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				code, err := startAttached(cmd, e, c.ID, interactive && c.Config.OpenStdin, c.Config.Tty)
				if err != nil {
					return err
				}
				if code != 0 {
					return withCode(code, nil)
				}
				return nil
			}
			return forEach(args, func(n string) error {
				_, err := e.Start(cmd.Context(), n, engine.StartOptions{})
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&attachFlag, "attach", "a", false, "attach to the output and return the exit code")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "attach stdin")
	return cmd
}

func stopCmd(g *globals) *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "stop [-t SECONDS] CONTAINER...",
		Short: "Stop workloads: the stop signal, then SIGKILL after the timeout",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			return forEach(args, func(n string) error {
				t := timeout
				if !cmd.Flags().Changed("time") {
					if c, err := e.Inspect(cmd.Context(), n); err == nil && c.Config.StopTimeout > 0 {
						t = c.Config.StopTimeout
					}
				}
				return e.Stop(cmd.Context(), n, time.Duration(t)*time.Second)
			})
		},
	}
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds to wait before killing")
	return cmd
}

func restartCmd(g *globals) *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "restart [-t SECONDS] CONTAINER...",
		Short: "Stop then start workloads",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			return forEach(args, func(n string) error {
				if err := e.Stop(cmd.Context(), n, time.Duration(timeout)*time.Second); err != nil {
					return err
				}
				_, err := e.Start(cmd.Context(), n, engine.StartOptions{})
				return err
			})
		},
	}
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds to wait before killing")
	return cmd
}

func killCmd(g *globals) *cobra.Command {
	var sig string
	cmd := &cobra.Command{
		Use:   "kill [-s SIGNAL] CONTAINER...",
		Short: "Send a signal (default SIGKILL) to workloads",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := engine.ParseSignal(sig)
			if err != nil {
				return err
			}
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			return forEach(args, func(n string) error { return e.Kill(cmd.Context(), n, s) })
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal to send")
	return cmd
}

func rmCmd(g *globals) *cobra.Command {
	var force, volumes bool
	cmd := &cobra.Command{
		Use:     "rm [-f] CONTAINER...",
		Aliases: []string{"remove"},
		Short:   "Remove workloads",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			if volumes {
				return forEach(args, func(n string) error { return e.RemoveWithVolumes(cmd.Context(), n, force) })
			}
			return forEach(args, func(n string) error { return e.Remove(cmd.Context(), n, force) })
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill and remove running workloads")
	cmd.Flags().BoolVarP(&volumes, "volumes", "v", false, "remove anonymous volumes too")
	return cmd
}

func waitCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "wait CONTAINER...",
		Short: "Block until workloads stop, then print their exit codes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			var failed error
			for _, n := range args {
				code, err := e.Wait(cmd.Context(), n)
				if err != nil {
					fmt.Fprintln(os.Stderr, "berth:", err)
					failed = withCode(1, nil)
					continue
				}
				fmt.Println(strconv.Itoa(code))
			}
			return failed
		},
	}
}

func execCmd(g *globals) *cobra.Command {
	var o engine.ExecOptions
	var env []string
	var detach bool
	cmd := &cobra.Command{
		Use:   "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
		Short: "Run a command in a running workload",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return withCode(126, err)
			}
			o.Args = args[1:]
			for _, kv := range env {
				o.Env = append(o.Env, kv)
			}
			if o.Tty {
				o.Width, o.Height = termSize()
			}
			conn, err := e.Exec(cmd.Context(), args[0], o)
			if err != nil {
				var se *engine.StartError
				if errors.As(err, &se) {
					return withCode(se.Code, err)
				}
				return withCode(126, err)
			}
			defer conn.Close()
			if detach {
				return nil
			}
			code, err := stream(conn, o.Stdin, o.Tty)
			if err != nil {
				return withCode(max(code, 126), err)
			}
			if code != 0 {
				return withCode(code, nil)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.SetInterspersed(false)
	fs.BoolVarP(&o.Stdin, "interactive", "i", false, "keep STDIN open")
	fs.BoolVarP(&o.Tty, "tty", "t", false, "allocate a pseudo-TTY")
	fs.StringArrayVarP(&env, "env", "e", nil, "set environment variables")
	fs.StringVarP(&o.WorkingDir, "workdir", "w", "", "working directory")
	fs.StringVarP(&o.User, "user", "u", "", "user[:group]")
	fs.BoolVarP(&detach, "detach", "d", false, "do not wait for the command")
	return cmd
}

func monitorCmd(g *globals) *cobra.Command {
	var attachFd int
	cmd := &cobra.Command{
		Use:    "monitor ID",
		Short:  "Internal: supervise one workload",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			syncFile := os.NewFile(3, "sync")
			if err != nil {
				fmt.Fprintf(syncFile, "{\"error\":%q,\"code\":125}\n", err.Error())
				return err
			}
			var af *os.File
			if attachFd > 0 {
				af = os.NewFile(uintptr(attachFd), "attach")
			}
			return e.RunMonitor(cmd.Context(), args[0], syncFile, af)
		},
	}
	cmd.Flags().IntVar(&attachFd, "attach-fd", 0, "inherited attach connection")
	return cmd
}
