package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berthdev/berth/internal/engine"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/logs"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"
)

func inspectCmd(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect [--format TEMPLATE] NAME|ID...",
		Short: "Show low-level information on workloads or images",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			var out []any
			for _, n := range args {
				c, err := e.Inspect(cmd.Context(), n)
				if err == nil {
					out = append(out, c)
					continue
				}
				if !errdefs.IsNotFound(err) {
					return err
				}
				img, ierr := e.Images().Get(cmd.Context(), n)
				if ierr != nil {
					return fmt.Errorf("no such object: %s: %w", n, errdefs.ErrNotFound)
				}
				out = append(out, img)
			}
			return printInspect(format, out)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Go template")
	return cmd
}

func printInspect(format string, objs []any) error {
	if format != "" {
		return printTemplate(format, objs)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "    ")
	return enc.Encode(objs)
}

func logsCmd(g *globals) *cobra.Command {
	var follow, timestamps bool
	var tail string
	cmd := &cobra.Command{
		Use:   "logs [-f] [--tail N] [--timestamps] CONTAINER",
		Short: "Print a workload's output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			e, err := g.engine(ctx)
			if err != nil {
				return err
			}
			c, err := e.Inspect(ctx, args[0])
			if err != nil {
				return err
			}
			n := -1
			if tail != "all" && tail != "" {
				if _, err := fmt.Sscanf(tail, "%d", &n); err != nil || n < 0 {
					return fmt.Errorf("invalid --tail %q: use a number or all: %w", tail, errdefs.ErrInvalidArgument)
				}
			}
			return logs.Read(ctx, e.LogPath(c.ID), os.Stdout, os.Stderr, logs.ReadOptions{
				Tail: n, Timestamps: timestamps, Follow: follow,
				Done: func() bool {
					cur, err := e.Inspect(ctx, c.ID)
					return err != nil || cur.State.Status != "running"
				},
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the output")
	cmd.Flags().BoolVarP(&timestamps, "timestamps", "t", false, "show timestamps")
	cmd.Flags().StringVarP(&tail, "tail", "n", "all", "lines to show from the end")
	return cmd
}

func topCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "top CONTAINER",
		Short: "Show a workload's processes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			ps, err := e.Top(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "UID\tPID\tPPID\tCMD")
			for _, p := range ps {
				fmt.Fprintf(tw, "%d\t%d\t%d\t%s\n", p.UID, p.PID, p.PPID, p.Cmd)
			}
			return tw.Flush()
		},
	}
}

func statsCmd(g *globals) *cobra.Command {
	var noStream bool
	var format string
	cmd := &cobra.Command{
		Use:   "stats --no-stream [CONTAINER...]",
		Short: "Show workloads' CPU and memory use",
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			if len(args) == 0 {
				cs, err := e.List(cmd.Context(), false)
				if err != nil {
					return err
				}
				for _, c := range cs {
					args = append(args, c.ID)
				}
			}
			for {
				var rows []map[string]string
				for _, n := range args {
					s, err := e.Stats(cmd.Context(), n, 500*time.Millisecond)
					if err != nil {
						return err
					}
					limit := "--"
					if s.MemoryLimit > 0 && s.MemoryLimit < 1<<62 {
						limit = units.BytesSize(float64(s.MemoryLimit))
					}
					rows = append(rows, map[string]string{
						"ID": s.ID[:12], "Name": s.Name, "CPUPerc": fmt.Sprintf("%.2f%%", s.CPUPercent),
						"MemUsage": units.BytesSize(float64(s.MemoryUsage)) + " / " + limit,
						"PIDs":     fmt.Sprint(s.Pids),
					})
				}
				if format != "" {
					if err := printTemplate(format, rows); err != nil {
						return err
					}
				} else {
					tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
					fmt.Fprintln(tw, "CONTAINER ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tPIDS")
					for _, r := range rows {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r["ID"], r["Name"], r["CPUPerc"], r["MemUsage"], r["PIDs"])
					}
					tw.Flush()
				}
				if noStream || cmd.Context().Err() != nil {
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVar(&noStream, "no-stream", false, "print one sample and exit")
	cmd.Flags().StringVar(&format, "format", "", "Go template over ID, Name, CPUPerc, MemUsage, PIDs")
	return cmd
}

func containerCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "container", Short: "Manage workloads"}
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Remove all stopped workloads",
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			removed, err := e.Prune(cmd.Context())
			if len(removed) > 0 {
				fmt.Println("Deleted Containers:\n" + strings.Join(removed, "\n"))
			}
			return err
		},
	}
	prune.Flags().BoolP("force", "f", false, "do not prompt (berth never prompts)")
	ls := psCmd(g)
	ls.Use = "ls"
	cmd.AddCommand(prune, ls, inspectCmd(g), rmCmd(g), runCmd(g), createCmd(g), startCmd(g), stopCmd(g), killCmd(g), logsCmd(g), execCmd(g))
	return cmd
}

func systemCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "system", Short: "Manage berth itself"}
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Remove stopped workloads and anything a killed berth left behind",
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			removed, err := e.SystemPrune(cmd.Context())
			for _, id := range removed {
				fmt.Println("removed", id)
			}
			return err
		},
	}
	prune.Flags().BoolP("force", "f", false, "do not prompt (berth never prompts)")
	prune.Flags().BoolP("all", "a", false, "also remove unused images")
	cmd.AddCommand(prune, infoCmd(g))
	return cmd
}

func infoCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show how berth is set up here",
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			info, err := e.Info(cmd.Context())
			if err != nil {
				return err
			}
			for _, kv := range info {
				fmt.Printf("%s: %s\n", kv[0], kv[1])
			}
			return nil
		},
	}
}

// inspectVerb is the `inspect NAME...` subcommand of one kind of object
// (network, volume): each name is looked up with get, then all are printed
// like `berth inspect` prints workloads.
func inspectVerb(g *globals, use, short string, get func(ctx context.Context, e *engine.Engine, name string) (any, error)) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			var out []any
			for _, a := range args {
				v, err := get(cmd.Context(), e, a)
				if err != nil {
					return err
				}
				out = append(out, v)
			}
			return printInspect(format, out)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Go template")
	return cmd
}
