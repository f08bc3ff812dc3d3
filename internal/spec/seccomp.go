package spec

import (
	"context"
	"fmt"
	"os"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/errdefs"
)

// SeccompUnconfined is the WithSeccomp profile that disables seccomp.
const SeccompUnconfined = "unconfined"

// WithSeccomp chooses the seccomp profile: "" for Docker's default profile
// (the default), SeccompUnconfined for none, or the path of a JSON profile
// in Docker's format.
//
// Inside Generate the profile is built after every other option, because
// Docker's profiles allow syscalls according to the final capabilities
// (CAP_SYS_ADMIN opens mount, and so on). Applied on its own to a spec, it
// builds the profile from the spec's capabilities at once.
func WithSeccomp(profile string) Opt {
	return func(ctx context.Context, s *specs.Spec) error {
		if profile != "" && profile != SeccompUnconfined {
			if _, err := os.Stat(profile); err != nil {
				return fmt.Errorf("set seccomp profile %s: %w: %w", profile, err, errdefs.ErrInvalidArgument)
			}
		}
		if g := generationFrom(ctx); g != nil {
			g.seccomp = profile
			return nil
		}
		return applySeccomp(s, profile)
	}
}

func applySeccomp(s *specs.Spec, profile string) error {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	var (
		sc  *specs.LinuxSeccomp
		err error
	)
	switch profile {
	case SeccompUnconfined:
	case "":
		sc, err = seccomp.GetDefaultProfile(s)
		if err != nil {
			return fmt.Errorf("set default seccomp profile: %w", err)
		}
	default:
		b, rerr := os.ReadFile(profile)
		if rerr != nil {
			return fmt.Errorf("set seccomp profile %s: %w: %w", profile, rerr, errdefs.ErrInvalidArgument)
		}
		sc, err = seccomp.LoadProfile(string(b), s)
		if err != nil {
			return fmt.Errorf("set seccomp profile %s: %w: %w", profile, err, errdefs.ErrInvalidArgument)
		}
	}
	s.Linux.Seccomp = sc
	return nil
}
