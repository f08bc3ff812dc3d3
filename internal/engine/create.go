package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/errdefs"
)

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// CreateOptions describe a new workload.
type CreateOptions struct {
	Name   string
	Config state.Config
	// Notice receives one-line notices (a microVM falling back to TCG);
	// nil drops them.
	Notice io.Writer
}

// Create records a new workload from an image in the store and prepares its
// writable layer. Nothing runs until Start.
func (e *Engine) Create(ctx context.Context, opts CreateOptions) (*state.Container, error) {
	trace("create: begin")
	cfg := opts.Config
	img, err := e.images.Get(ctx, cfg.Image)
	trace("create: image resolved")
	if err != nil {
		return nil, fmt.Errorf("create container from %s: %w", cfg.Image, err)
	}
	if err := validateConfig(&cfg); err != nil {
		return nil, err
	}
	if cfg.Isolation == state.IsolationVM {
		// Resolve the accelerator here, in the user's command, so that a
		// missing QEMU or kernel fails at create and the TCG notice is seen.
		accel, reason, err := e.VMAccelerator(ctx, cfg.Kernel, cfg.Accel)
		if err != nil {
			return nil, err
		}
		if accel == "tcg" && cfg.Accel == "" && e.cfg.Accel == "" && opts.Notice != nil {
			fmt.Fprintf(opts.Notice, "berth: KVM unusable (%s); running the microVM under TCG software emulation\n", firstLineOf(reason))
		}
		cfg.Accel = accel
	}
	if err := e.normalizeNetworkConfig(ctx, &cfg); err != nil { // network.go
		return nil, err
	}
	rt, err := e.resolveRuntime(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	name := opts.Name
	if name == "" {
		name = randomName(id)
	} else if !validName.MatchString(name) {
		return nil, fmt.Errorf("invalid container name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed: %w", name, errdefs.ErrInvalidArgument)
	}
	trace("create: runtime resolved")
	lowers, err := e.images.LayerDirs(ctx, img)
	if err != nil {
		return nil, fmt.Errorf("unpack image %s: %w", cfg.Image, err)
	}
	trace("create: layers")
	mounts, err := e.snaps.Prepare(ctx, id, lowers)
	if err != nil {
		return nil, fmt.Errorf("prepare root filesystem for %s: %w", name, err)
	}
	if err := os.MkdirAll(e.containerDir(id), 0o710); err != nil {
		_ = e.snaps.Remove(ctx, id)
		return nil, fmt.Errorf("create container dir: %w", err)
	}
	c := &state.Container{
		ID:           id,
		Name:         name,
		ImageID:      img.ID.String(),
		Created:      time.Now().UTC(),
		Config:       cfg,
		Runtime:      rt,
		RootfsMounts: mounts,
		ImageConfig:  img.Config.Config,
		State:        state.State{Status: state.StatusCreated},
	}
	trace("create: prepared")
	newVolumes, err := e.resolveMounts(ctx, c) // volume.go
	if err != nil {
		_ = e.snaps.Remove(ctx, id)
		_ = os.RemoveAll(e.containerDir(id))
		return nil, err
	}
	if err := e.db.Add(ctx, c); err != nil {
		_ = e.snaps.Remove(ctx, id)
		_ = os.RemoveAll(e.containerDir(id))
		e.removeVolumes(ctx, newVolumes)
		return nil, err
	}
	return c, nil
}

func validateConfig(cfg *state.Config) error {
	switch cfg.Isolation {
	case "":
		cfg.Isolation = state.IsolationContainer
	case state.IsolationContainer, state.IsolationVM:
	default:
		return fmt.Errorf("unknown isolation %q: use container or vm: %w", cfg.Isolation, errdefs.ErrInvalidArgument)
	}
	switch cfg.Accel {
	case "", "auto", "kvm", "tcg":
	default:
		return fmt.Errorf("unknown accelerator %q: use kvm or tcg: %w", cfg.Accel, errdefs.ErrInvalidArgument)
	}
	if cfg.Memory < 0 || cfg.CPUs < 0 || cfg.PidsLimit < 0 {
		return fmt.Errorf("resource limits must not be negative: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Memory > 0 && cfg.Memory < 6*1024*1024 {
		return fmt.Errorf("minimum memory limit allowed is 6MB: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

func newID() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate container ID: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

var (
	adjectives = []string{"brave", "calm", "eager", "fond", "glad", "happy", "keen", "lucid", "merry", "nimble", "proud", "quiet", "sharp", "tidy", "vivid", "witty"}
	nouns      = []string{"anchor", "beacon", "cove", "dock", "ferry", "harbor", "jetty", "keel", "lagoon", "mast", "pier", "quay", "reef", "sail", "tide", "wharf"}
)

// randomName derives a Docker-style name from the ID's first bytes.
func randomName(id string) string {
	b, _ := hex.DecodeString(id[:6])
	return fmt.Sprintf("%s_%s_%02x", adjectives[b[0]%16], nouns[b[1]%16], b[2])
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
