package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/berthdev/berth/internal/engine"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/progress"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// registryFlags are the client flags shared by pull, push and login.
type registryFlags struct {
	tlsVerify bool
	authFile  string
	quiet     bool
}

func (f *registryFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.tlsVerify, "tls-verify", true, "require HTTPS with a verified certificate (loopback hosts may use HTTP anyway)")
	cmd.Flags().StringVar(&f.authFile, "authfile", "", "credentials file (default: Docker's config.json)")
	cmd.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "print no progress")
}

// options returns the engine options and a progress display to close.
func (f *registryFlags) options() (engine.RegistryOptions, func()) {
	o := engine.RegistryOptions{TLSVerify: f.tlsVerify, AuthFile: f.authFile}
	if f.quiet {
		return o, func() {}
	}
	pw := progress.New(os.Stderr, term.IsTerminal(int(os.Stderr.Fd())))
	o.Progress = pw
	return o, func() { pw.Close() }
}

func pullCmd(g *globals) *cobra.Command {
	var f registryFlags
	var platform string
	var allTags bool
	cmd := &cobra.Command{
		Use:   "pull [--platform OS/ARCH] [--all-tags] REF",
		Short: "Download an image from a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			o, done := f.options()
			o.Platform, o.AllTags = platform, allTags
			res, err := e.Pull(cmd.Context(), args[0], o)
			done()
			if err != nil {
				return err
			}
			for _, p := range res {
				if !f.quiet {
					status := "Downloaded newer image for"
					if p.UpToDate {
						status = "Image is up to date for"
					}
					fmt.Fprintf(os.Stderr, "Digest: %s\nStatus: %s %s\n", p.Digest, status, p.Ref)
				}
				fmt.Println(p.Ref)
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&platform, "platform", "", "platform to pick from a multi-platform image (default: this host's)")
	cmd.Flags().BoolVarP(&allTags, "all-tags", "a", false, "download every tag of the repository")
	return cmd
}

func pushCmd(g *globals) *cobra.Command {
	var f registryFlags
	cmd := &cobra.Command{
		Use:   "push REF",
		Short: "Upload an image to a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			o, done := f.options()
			d, err := e.Push(cmd.Context(), args[0], o)
			done()
			if err != nil {
				return err
			}
			if !f.quiet {
				fmt.Fprintf(os.Stderr, "Pushed %s\n", args[0])
			}
			fmt.Println(d)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

func loginCmd(g *globals) *cobra.Command {
	var f registryFlags
	var user, pass string
	var passStdin bool
	cmd := &cobra.Command{
		Use:   "login [-u USER] [-p PASS | --password-stdin] HOST",
		Short: "Save credentials for a registry after checking them",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			in := bufio.NewReader(os.Stdin)
			if user == "" {
				fmt.Fprint(os.Stderr, "Username: ")
				line, _ := in.ReadString('\n')
				user = strings.TrimSpace(line)
			}
			switch {
			case passStdin:
				data, err := io.ReadAll(in)
				if err != nil {
					return err
				}
				pass = strings.TrimRight(string(data), "\r\n")
			case pass == "" && term.IsTerminal(int(os.Stdin.Fd())):
				fmt.Fprint(os.Stderr, "Password: ")
				b, err := term.ReadPassword(int(os.Stdin.Fd()))
				fmt.Fprintln(os.Stderr)
				if err != nil {
					return err
				}
				pass = string(b)
			case pass == "":
				line, _ := in.ReadString('\n')
				pass = strings.TrimRight(line, "\r\n")
			}
			if user == "" || pass == "" {
				return fmt.Errorf("login %s: a username and a password are needed: %w", args[0], errdefs.ErrInvalidArgument)
			}
			o, _ := f.options()
			o.Progress = nil
			res, err := e.Login(cmd.Context(), args[0], user, pass, o)
			if err != nil {
				return err
			}
			fmt.Printf("Login Succeeded (credentials saved for %s in %s)\n", res.Host, res.Path)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&user, "username", "u", "", "user name")
	cmd.Flags().StringVarP(&pass, "password", "p", "", "password (prefer --password-stdin)")
	cmd.Flags().BoolVar(&passStdin, "password-stdin", false, "read the password from stdin")
	return cmd
}

func logoutCmd(g *globals) *cobra.Command {
	var authFile string
	cmd := &cobra.Command{
		Use:   "logout HOST",
		Short: "Forget a registry's credentials",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			if err := e.Logout(cmd.Context(), args[0], engine.RegistryOptions{TLSVerify: true, AuthFile: authFile}); err != nil {
				return err
			}
			fmt.Printf("Removed login credentials for %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&authFile, "authfile", "", "credentials file (default: Docker's config.json)")
	return cmd
}

// registryCmd runs the embedded registry, which lives in its own binary
// (berth-registry, beside berth) so that the distribution library and its
// dependencies do not slow down every other berth command's start.
func registryCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:                "registry serve|gc [FLAGS]",
		Short:              "Run berth's embedded OCI registry (serve, gc)",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			bin, err := siblingBinary("berth-registry")
			if err != nil {
				return err
			}
			c := exec.CommandContext(cmd.Context(), bin, args...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
			c.Env = append(os.Environ(), "BERTH_ROOT="+g.root)
			if err := c.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return withCode(ee.ExitCode(), nil)
				}
				return err
			}
			return nil
		},
	}
}

// siblingBinary finds a helper binary next to the running berth, else on PATH.
func siblingBinary(name string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s is not installed next to berth or on PATH (make build puts it in bin/): %w", name, errdefs.ErrUnavailable)
}
