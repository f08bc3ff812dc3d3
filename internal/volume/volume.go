package volume

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"time"

	"github.com/berthdev/berth/internal/errdefs"
)

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// Volume is one named volume.
type Volume struct {
	Name       string            `json:"Name"`
	Driver     string            `json:"Driver"`
	Mountpoint string            `json:"Mountpoint"`
	CreatedAt  time.Time         `json:"CreatedAt"`
	Labels     map[string]string `json:"Labels"`
	Scope      string            `json:"Scope"`
	// Anonymous volumes were named by berth for a workload (`rm -v` and
	// `volume prune` remove them).
	Anonymous bool `json:"Anonymous,omitempty"`
}

// Store is the volumes directory.
type Store struct {
	dir string
}

// Open returns the store in dir (created if needed).
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create volumes dir %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// CreateOptions describe a new volume.
type CreateOptions struct {
	Labels    map[string]string
	Anonymous bool
}

// ValidName says whether name can name a volume.
func ValidName(name string) bool { return validName.MatchString(name) }

// NewAnonymousName is a fresh name for an anonymous volume.
func NewAnonymousName() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// Create makes a new volume; an existing one is ErrAlreadyExists.
func (s *Store) Create(ctx context.Context, name string, o CreateOptions) (*Volume, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("invalid volume name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed: %w", name, errdefs.ErrInvalidArgument)
	}
	dir := filepath.Join(s.dir, name)
	if err := os.Mkdir(dir, 0o701); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("volume %s: %w", name, errdefs.ErrAlreadyExists)
		}
		return nil, fmt.Errorf("create volume %s: %w", name, err)
	}
	v := &Volume{Name: name, Driver: "local", Mountpoint: s.Path(name), CreatedAt: time.Now().UTC(), Labels: o.Labels, Scope: "local", Anonymous: o.Anonymous}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if err := os.Mkdir(v.Mountpoint, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("create volume %s: %w", name, err)
	}
	data, _ := json.MarshalIndent(v, "", "  ")
	tmp := filepath.Join(dir, "volume.json.tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("create volume %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "volume.json")); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("create volume %s: %w", name, err)
	}
	return v, nil
}

// Ensure returns the volume, creating it on first use.
func (s *Store) Ensure(ctx context.Context, name string) (*Volume, bool, error) {
	v, err := s.Create(ctx, name, CreateOptions{})
	if err == nil {
		return v, true, nil
	}
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		return nil, false, err
	}
	// Another berth may be between its mkdir and its metadata: wait briefly.
	for i := 0; ; i++ {
		v, err = s.Get(ctx, name)
		if err == nil || i == 50 {
			return v, false, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Get returns a volume by name.
func (s *Store) Get(ctx context.Context, name string) (*Volume, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("no such volume: %s: %w", name, errdefs.ErrNotFound)
	}
	data, err := os.ReadFile(filepath.Join(s.dir, name, "volume.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no such volume: %s: %w", name, errdefs.ErrNotFound)
		}
		return nil, err
	}
	var v Volume
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("decode volume %s: %w", name, err)
	}
	v.Mountpoint = s.Path(name)
	return &v, nil
}

// List returns every volume, by name.
func (s *Store) List(ctx context.Context) ([]*Volume, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []*Volume
	for _, ent := range ents {
		if v, err := s.Get(ctx, ent.Name()); err == nil {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes a volume and its data. The caller checks it is unused.
func (s *Store) Remove(ctx context.Context, name string) error {
	if _, err := s.Get(ctx, name); err != nil {
		return err
	}
	dir := filepath.Join(s.dir, name)
	// Drop the metadata first: a half-removed volume is then gone, not corrupt.
	if err := os.Remove(filepath.Join(dir, "volume.json")); err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	return nil
}

// Path is where a volume's data lives.
func (s *Store) Path(name string) string { return filepath.Join(s.dir, name, "_data") }
