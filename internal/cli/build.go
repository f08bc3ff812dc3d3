package cli

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berthdev/berth/internal/build"
	"github.com/berthdev/berth/internal/errdefs"
)

func buildCmd(g *globals) *cobra.Command {
	var (
		tags, buildArgs, labels []string
		file, target, platform  string
		noCache, pull, quiet    bool
	)
	cmd := &cobra.Command{
		Use:   "build [-t NAME[:TAG]]... [-f Dockerfile] [--build-arg K=V]... [--target STAGE] [--no-cache] [-q] CONTEXT",
		Short: "Build an image from a Dockerfile",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			opts := build.Options{
				ContextDir: args[0],
				Tags:       tags,
				Target:     target,
				NoCache:    noCache,
				Pull:       pull,
				Platform:   platform,
				Out:        os.Stdout,
				Err:        os.Stderr,
			}
			if quiet {
				opts.Out, opts.Err = nil, nil
			}
			switch file {
			case "":
			case "-":
				data, err := io.ReadAll(os.Stdin)
				if err != nil {
					return fmt.Errorf("read Dockerfile from stdin: %w", err)
				}
				opts.Dockerfile, opts.DockerfileContent = "Dockerfile", data
			default:
				opts.Dockerfile = file
			}
			var err error
			if opts.BuildArgs, err = keyValues("--build-arg", buildArgs, true); err != nil {
				return err
			}
			if opts.Labels, err = keyValues("--label", labels, false); err != nil {
				return err
			}
			e, err := g.engine(ctx)
			if err != nil {
				return err
			}
			img, err := e.Build(ctx, opts)
			if err != nil {
				return err
			}
			fmt.Println(img.ID)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringArrayVarP(&tags, "tag", "t", nil, "name the image NAME[:TAG] (repeatable)")
	fs.StringVarP(&file, "file", "f", "", "the Dockerfile (default CONTEXT/Dockerfile; - reads stdin)")
	fs.StringArrayVar(&buildArgs, "build-arg", nil, "set a build argument K=V (K alone takes it from the environment)")
	fs.StringVar(&target, "target", "", "build this stage (default: the last)")
	fs.BoolVar(&noCache, "no-cache", false, "run every step even when cached")
	fs.BoolVar(&pull, "pull", false, "pull base images even when stored")
	fs.StringArrayVar(&labels, "label", nil, "add a label K=V to the image (repeatable)")
	fs.StringVar(&platform, "platform", "", "target platform; only the host's (e.g. linux/amd64)")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print only the image ID")
	return cmd
}

// keyValues parses K=V flags; with fromEnv a bare K takes its value from
// the environment (and is skipped when unset there), as Docker's --build-arg.
func keyValues(flag string, kvs []string, fromEnv bool) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE: %w", flag, kv, errdefs.ErrInvalidArgument)
		}
		if !ok {
			if !fromEnv {
				return nil, fmt.Errorf("%s %q: want KEY=VALUE: %w", flag, kv, errdefs.ErrInvalidArgument)
			}
			if v, ok = os.LookupEnv(k); !ok {
				continue
			}
		}
		out[k] = v
	}
	return out, nil
}
