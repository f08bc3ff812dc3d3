package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berthdev/berth/internal/image"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"
)

// imageRow is what `berth images --format` templates see.
type imageRow struct {
	ID           string `json:"ID"`
	Repository   string `json:"Repository"`
	Tag          string `json:"Tag"`
	Digest       string `json:"Digest"`
	CreatedAt    string `json:"CreatedAt"`
	CreatedSince string `json:"CreatedSince"`
	Size         string `json:"Size"`
}

func imageRows(imgs []*image.Image, noTrunc bool) []imageRow {
	var rows []imageRow
	for _, img := range imgs {
		id := img.ID.Hex
		if !noTrunc {
			id = id[:12]
		}
		base := imageRow{
			ID: id, Digest: img.Digest.String(),
			CreatedAt:    img.Created.Local().Format("2006-01-02 15:04:05 -0700 MST"),
			CreatedSince: units.HumanDuration(time.Since(img.Created)) + " ago",
			Size:         units.HumanSizeWithPrecision(float64(img.Size), 3),
		}
		if len(img.RepoTags) == 0 {
			r := base
			r.Repository, r.Tag = "<none>", "<none>"
			rows = append(rows, r)
		}
		for _, t := range img.RepoTags {
			r := base
			fam := image.FamiliarName(t)
			i := strings.LastIndex(fam, ":")
			if i > strings.LastIndex(fam, "/") {
				r.Repository, r.Tag = fam[:i], fam[i+1:]
			} else {
				r.Repository, r.Tag = fam, "<none>"
			}
			rows = append(rows, r)
		}
	}
	return rows
}

func imagesCmd(g *globals) *cobra.Command {
	var quiet, noTrunc bool
	var format string
	cmd := &cobra.Command{
		Use:   "images [-q] [--format TEMPLATE|json]",
		Short: "List images",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			imgs, err := e.Images().List(cmd.Context())
			if err != nil {
				return err
			}
			rows := imageRows(imgs, noTrunc)
			if len(args) == 1 {
				var kept []imageRow
				for _, r := range rows {
					if r.Repository == args[0] || r.Repository+":"+r.Tag == args[0] {
						kept = append(kept, r)
					}
				}
				rows = kept
			}
			switch {
			case quiet:
				seen := map[string]bool{}
				for _, r := range rows {
					if !seen[r.ID] {
						seen[r.ID] = true
						fmt.Println(r.ID)
					}
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
			fmt.Fprintln(tw, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Repository, r.Tag, r.ID, r.CreatedSince, r.Size)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only show image IDs")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not truncate IDs")
	cmd.Flags().StringVar(&format, "format", "", "Go template (e.g. '{{.Repository}}:{{.Tag}}') or json")
	return cmd
}

func tagCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "tag SOURCE TARGET",
		Short: "Give an image another name",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			return e.Images().Tag(cmd.Context(), args[0], args[1])
		},
	}
}

func rmiCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rmi [-f] IMAGE...",
		Short: "Remove images",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			var failed error
			for _, ref := range args {
				untagged, deleted, err := e.RemoveImage(cmd.Context(), ref, force)
				for _, u := range untagged {
					fmt.Println("Untagged:", image.FamiliarName(u))
				}
				for _, d := range deleted {
					fmt.Println("Deleted:", d)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "berth:", err)
					failed = fmt.Errorf("failed to remove %d image(s)", 1)
				}
			}
			return failed
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even if in use or tagged several times")
	return cmd
}

func loadCmd(g *globals) *cobra.Command {
	var input string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "load [-i FILE]",
		Short: "Load images from a Docker archive or OCI layout tarball",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			var r io.Reader = os.Stdin
			if input != "" {
				f, err := os.Open(input)
				if err != nil {
					return fmt.Errorf("load: %w", err)
				}
				defer f.Close()
				r = f
			}
			refs, err := e.Images().Load(cmd.Context(), r)
			if err != nil {
				return err
			}
			if !quiet {
				for _, ref := range refs {
					fmt.Println("Loaded image:", image.FamiliarName(ref))
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&input, "input", "i", "", "read from FILE instead of stdin")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing")
	return cmd
}

func saveCmd(g *globals) *cobra.Command {
	var output, format string
	cmd := &cobra.Command{
		Use:   "save [-o FILE] [--format docker-archive|oci-archive] IMAGE...",
		Short: "Write images to a tarball",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			if output == "" {
				return e.Images().Save(cmd.Context(), os.Stdout, format, args...)
			}
			tmp := output + ".berth-tmp"
			f, err := os.Create(tmp)
			if err != nil {
				return fmt.Errorf("save: %w", err)
			}
			if err := e.Images().Save(cmd.Context(), f, format, args...); err != nil {
				f.Close()
				os.Remove(tmp)
				return err
			}
			if err := f.Close(); err != nil {
				os.Remove(tmp)
				return err
			}
			return os.Rename(tmp, output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to FILE instead of stdout")
	cmd.Flags().StringVar(&format, "format", "docker-archive", "docker-archive or oci-archive")
	return cmd
}

func importCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "import ROOTFS.tar|- NAME[:TAG]",
		Short: "Make a one-layer image from a root filesystem tarball",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			var r io.Reader = os.Stdin
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("import: %w", err)
				}
				defer f.Close()
				r = f
			}
			img, err := e.Images().Import(cmd.Context(), r, args[1])
			if err != nil {
				return err
			}
			fmt.Println(img.ID)
			return nil
		},
	}
}

func imageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage images"}
	var format string
	inspect := &cobra.Command{
		Use:   "inspect IMAGE...",
		Short: "Show images' metadata",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			var out []any
			for _, ref := range args {
				img, err := e.Images().Get(cmd.Context(), ref)
				if err != nil {
					return err
				}
				out = append(out, img)
			}
			return printInspect(format, out)
		},
	}
	inspect.Flags().StringVarP(&format, "format", "f", "", "Go template")
	ls := imagesCmd(g)
	ls.Use = "ls"
	cmd.AddCommand(inspect, ls, tagCmd(g), rmiCmd(g), loadCmd(g), saveCmd(g), importCmd(g))
	rm := rmiCmd(g)
	rm.Use = "rm [-f] IMAGE..."
	cmd.AddCommand(rm)
	return cmd
}
