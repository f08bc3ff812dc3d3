package cli

import (
	"encoding/json"
	"fmt"
	"github.com/berthdev/berth/internal/engine"
	"os"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/berthdev/berth/internal/image"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"
)

// psRow is what `berth ps --format` templates see.
type psRow struct {
	ID         string `json:"ID"`
	Image      string `json:"Image"`
	Command    string `json:"Command"`
	CreatedAt  string `json:"CreatedAt"`
	RunningFor string `json:"RunningFor"`
	Status     string `json:"Status"`
	State      string `json:"State"`
	Names      string `json:"Names"`
	Isolation  string `json:"Isolation"`
	Runtime    string `json:"Runtime"`
	Ports      string `json:"Ports"`
}

func humanStatus(c *engine.Container) string {
	s := c.State
	switch s.Status {
	case engine.StatusRunning:
		return "Up " + units.HumanDuration(time.Since(s.StartedAt))
	case engine.StatusExited:
		return fmt.Sprintf("Exited (%d) %s ago", s.ExitCode, units.HumanDuration(time.Since(s.FinishedAt)))
	case engine.StatusCreated:
		return "Created"
	default:
		return string(s.Status)
	}
}

func commandOf(c *engine.Container) string {
	args := append(append([]string{}, c.Config.Entrypoint...), c.Config.Cmd...)
	s := strings.Join(args, " ")
	if len(s) > 20 {
		s = s[:19] + "…"
	}
	return fmt.Sprintf("%q", s)
}

func psCmd(g *globals) *cobra.Command {
	var all, quiet, noTrunc bool
	var format string
	cmd := &cobra.Command{
		Use:     "ps [-a] [-q] [--format TEMPLATE|json]",
		Aliases: []string{"list"},
		Short:   "List workloads",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			cs, err := e.List(cmd.Context(), all)
			if err != nil {
				return err
			}
			rows := make([]psRow, 0, len(cs))
			for _, c := range cs {
				id := c.ID
				if !noTrunc {
					id = id[:12]
				}
				rows = append(rows, psRow{
					ID: id, Image: image.FamiliarName(c.Config.Image), Command: commandOf(c),
					CreatedAt:  c.Created.Local().Format("2006-01-02 15:04:05 -0700 MST"),
					RunningFor: units.HumanDuration(time.Since(c.Created)) + " ago",
					Status:     humanStatus(c), State: string(c.State.Status), Names: c.Name,
					Isolation: string(c.Config.Isolation), Runtime: c.Runtime,
					Ports: formatPorts(containerPorts(c)),
				})
			}
			switch {
			case quiet:
				for _, r := range rows {
					fmt.Println(r.ID)
				}
				return nil
			case format == "json":
				enc := json.NewEncoder(os.Stdout)
				for _, r := range rows {
					if err := enc.Encode(r); err != nil {
						return err
					}
				}
				return nil
			case format != "":
				return printTemplate(format, rows)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tISOLATION\tPORTS\tNAMES")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Image, r.Command, r.RunningFor, r.Status, r.Isolation, r.Ports, r.Names)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show all workloads (default shows just running)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display IDs")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not truncate IDs")
	cmd.Flags().StringVar(&format, "format", "", "Go template (e.g. '{{.Names}} {{.Status}}'), 'table TEMPLATE', or json")
	return cmd
}

// printTemplate renders rows with a Docker-style --format template; a
// leading "table " prints a header row and aligns columns.
func printTemplate[T any](format string, rows []T) error {
	table := strings.HasPrefix(format, "table ")
	format = strings.TrimPrefix(format, "table ")
	format = strings.ReplaceAll(format, `\t`, "\t")
	tmpl, err := template.New("format").Funcs(template.FuncMap{
		"json": func(v any) string { b, _ := json.Marshal(v); return string(b) },
	}).Parse(format + "\n")
	if err != nil {
		return fmt.Errorf("invalid --format template: %w", err)
	}
	out := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	if table {
		hdr := strings.NewReplacer("{{", "", "}}", "", ".", "").Replace(format)
		fmt.Fprintln(out, strings.ToUpper(hdr))
	}
	for _, r := range rows {
		if err := tmpl.Execute(out, r); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
	}
	return out.Flush()
}
