package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/berthdev/berth/internal/engine"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"
)

// parseVolume parses -v: /PATH (an anonymous volume), NAME:/PATH (a named
// volume, created on first use) or /HOST/PATH:/PATH (a bind mount; the
// host directory is created if missing, like Docker), each with
// :ro|rw|nocopy|z|Z|PROPAGATION options, comma separated.
func parseVolume(s string) (engine.MountSpec, error) {
	bad := func(why string) error {
		return fmt.Errorf("invalid -v %q: %s: use [NAME:|/HOST/PATH:]/PATH[:ro]: %w", s, why, errdefs.ErrInvalidArgument)
	}
	parts := strings.Split(s, ":")
	var src, dst, opts string
	switch len(parts) {
	case 1:
		dst = parts[0]
	case 2:
		if path.IsAbs(parts[1]) {
			src, dst = parts[0], parts[1]
		} else {
			dst, opts = parts[0], parts[1]
		}
	case 3:
		src, dst, opts = parts[0], parts[1], parts[2]
	default:
		return engine.MountSpec{}, bad("too many fields")
	}
	if !path.IsAbs(dst) {
		return engine.MountSpec{}, bad("the container path must be absolute")
	}
	m := engine.MountSpec{Type: engine.MountVolume, Source: src, Target: dst}
	switch {
	case src == "":
	case strings.HasPrefix(src, "/"):
		m.Type, m.CreateHostPath = engine.MountBind, true
	case strings.HasPrefix(src, ".") || strings.HasPrefix(src, "~"):
		return m, bad("a host path must be absolute")
	}
	if opts != "" {
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "ro":
				m.ReadOnly = true
			case "rw", "z", "Z":
			case "nocopy":
				m.NoCopy = true
			case "private", "rprivate", "shared", "rshared", "slave", "rslave":
				m.Options = append(m.Options, o)
			default:
				return m, bad("unknown option " + o)
			}
		}
	}
	return m, nil
}

// parseMount parses --mount's comma-separated KEY=VALUE list.
func parseMount(s string) (engine.MountSpec, error) {
	bad := func(why string) error {
		return fmt.Errorf("invalid --mount %q: %s: %w", s, why, errdefs.ErrInvalidArgument)
	}
	m := engine.MountSpec{Type: engine.MountVolume}
	for _, field := range strings.Split(s, ",") {
		k, v, hasV := strings.Cut(strings.TrimSpace(field), "=")
		boolVal := func() (bool, error) {
			if !hasV {
				return true, nil
			}
			b, err := strconv.ParseBool(v)
			if err != nil {
				return false, bad(k + " must be true or false")
			}
			return b, nil
		}
		var err error
		switch strings.ToLower(k) {
		case "type":
			m.Type = v
		case "source", "src":
			m.Source = v
		case "target", "destination", "dst":
			m.Target = v
		case "readonly", "ro":
			m.ReadOnly, err = boolVal()
		case "volume-nocopy":
			m.NoCopy, err = boolVal()
		case "bind-propagation":
			m.Options = append(m.Options, v)
		case "tmpfs-size":
			n, perr := units.RAMInBytes(v)
			if perr != nil || n <= 0 {
				return m, bad("bad tmpfs-size")
			}
			m.Options = append(m.Options, "size="+strconv.FormatInt(n, 10))
		case "tmpfs-mode":
			if _, perr := strconv.ParseUint(v, 8, 32); perr != nil {
				return m, bad("tmpfs-mode must be octal")
			}
			m.Options = append(m.Options, "mode="+v)
		case "consistency", "volume-driver":
		default:
			return m, bad("unknown key " + k)
		}
		if err != nil {
			return m, err
		}
	}
	switch m.Type {
	case engine.MountBind:
		if m.Source == "" {
			return m, bad("a bind mount needs source")
		}
	case engine.MountVolume:
	case engine.MountTmpfs:
		if m.Source != "" {
			return m, bad("a tmpfs has no source")
		}
	default:
		return m, bad("type must be bind, volume or tmpfs")
	}
	if m.Target == "" {
		return m, bad("target is required")
	}
	return m, nil
}

// parseTmpfs parses --tmpfs /PATH[:OPTIONS]; like Docker the mount is
// noexec unless OPTIONS say exec.
func parseTmpfs(s string) (engine.MountSpec, error) {
	dst, opts, _ := strings.Cut(s, ":")
	if !path.IsAbs(dst) {
		return engine.MountSpec{}, fmt.Errorf("invalid --tmpfs %q: the path must be absolute: %w", s, errdefs.ErrInvalidArgument)
	}
	m := engine.MountSpec{Type: engine.MountTmpfs, Target: dst}
	exec := false
	if opts != "" {
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "ro":
				m.ReadOnly = true
			case "exec":
				exec = true
			case "noexec":
			default:
				m.Options = append(m.Options, o)
			}
		}
	}
	if !exec {
		m.Options = append([]string{"noexec"}, m.Options...)
	}
	return m, nil
}

func volumeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "volume", Short: "Manage volumes"}
	var labels []string
	create := &cobra.Command{
		Use:   "create [--label K=V] [NAME]",
		Short: "Create a volume",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			v, err := e.VolumeCreate(cmd.Context(), name, parseLabels(labels))
			if err != nil {
				return err
			}
			fmt.Println(v.Name)
			return nil
		},
	}
	create.Flags().StringArrayVarP(&labels, "label", "l", nil, "set metadata (K=V)")
	create.Flags().StringP("driver", "d", "local", "driver (only local)")

	var quiet bool
	var format string
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List volumes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			vs, err := e.VolumeList(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case quiet:
				for _, v := range vs {
					fmt.Println(v.Name)
				}
				return nil
			case format == "json":
				return json.NewEncoder(os.Stdout).Encode(vs)
			case format != "":
				return printTemplate(format, vs)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "DRIVER\tVOLUME NAME")
			for _, v := range vs {
				fmt.Fprintf(tw, "%s\t%s\n", v.Driver, v.Name)
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display names")
	ls.Flags().StringVar(&format, "format", "", "Go template or json")

	inspect := inspectVerb(g, "inspect VOLUME...", "Show volumes' details", func(ctx context.Context, e *engine.Engine, name string) (any, error) {
		return e.VolumeInspect(ctx, name)
	})

	var force bool
	rm := &cobra.Command{
		Use:     "rm [-f] VOLUME...",
		Aliases: []string{"remove"},
		Short:   "Remove volumes (in use: only with -f)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			return forEach(args, func(n string) error { return e.VolumeRemove(cmd.Context(), n, force) })
		},
	}
	rm.Flags().BoolVarP(&force, "force", "f", false, "remove even if a workload uses it")

	var all bool
	prune := &cobra.Command{
		Use:   "prune [-a]",
		Short: "Remove unused anonymous volumes (with -a, unused named ones too)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			removed, err := e.VolumePrune(cmd.Context(), all)
			for _, n := range removed {
				fmt.Println(n)
			}
			return err
		},
	}
	prune.Flags().BoolVarP(&all, "all", "a", false, "also remove unused named volumes")
	prune.Flags().BoolP("force", "f", false, "do not prompt (berth never prompts)")
	cmd.AddCommand(create, ls, inspect, rm, prune)
	return cmd
}
