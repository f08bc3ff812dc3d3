// Package state is berth's durable metadata: one bbolt database holding every
// workload's record. Every berth process (CLI or monitor) opens it for the
// length of one operation; bbolt's file lock serialises writers, so two
// `berth run` at once or a `berth rm` during a `berth ps` never corrupt it.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/snapshot"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketContainers = []byte("containers")
	bucketNames      = []byte("names")
)

// Status is a workload's lifecycle state as berth records it.
type Status string

// The statuses a container record moves through.
const (
	StatusCreated  Status = "created"
	StatusRunning  Status = "running"
	StatusExited   Status = "exited"
	StatusRemoving Status = "removing"
)

// Isolation says how a workload is run.
type Isolation string

// The isolations berth offers.
const (
	IsolationContainer Isolation = "container"
	IsolationVM        Isolation = "vm"
)

// Config is what the user asked for when creating the workload.
type Config struct {
	Image         string            `json:"image"`
	Cmd           []string          `json:"cmd,omitempty"`
	Entrypoint    []string          `json:"entrypoint,omitempty"`
	EntrypointSet bool              `json:"entrypointSet,omitempty"`
	Env           []string          `json:"env,omitempty"`
	WorkingDir    string            `json:"workingDir,omitempty"`
	User          string            `json:"user,omitempty"`
	Hostname      string            `json:"hostname,omitempty"`
	Tty           bool              `json:"tty,omitempty"`
	OpenStdin     bool              `json:"openStdin,omitempty"`
	ReadOnly      bool              `json:"readOnly,omitempty"`
	AutoRemove    bool              `json:"autoRemove,omitempty"`
	Memory        int64             `json:"memory,omitempty"`
	CPUs          float64           `json:"cpus,omitempty"`
	PidsLimit     int64             `json:"pidsLimit,omitempty"`
	CapAdd        []string          `json:"capAdd,omitempty"`
	CapDrop       []string          `json:"capDrop,omitempty"`
	SecurityOpt   []string          `json:"securityOpt,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	StopSignal    string            `json:"stopSignal,omitempty"`
	StopTimeout   int               `json:"stopTimeout,omitempty"`
	Isolation     Isolation         `json:"isolation"`
	Runtime       string            `json:"runtime"`
	// VM-only settings.
	Kernel string `json:"kernel,omitempty"`
	Accel  string `json:"accel,omitempty"`

	// Networks and volumes (types in network.go and volume.go).
	// NetworkMode is none, host, or bridge with Networks naming the
	// networks; empty in records older than networking means none.
	NetworkMode string           `json:"networkMode,omitempty"`
	Networks    []EndpointConfig `json:"networks,omitempty"`
	Ports       []PortBinding    `json:"ports,omitempty"`
	PublishAll  bool             `json:"publishAll,omitempty"`
	DNS         []string         `json:"dns,omitempty"`
	DNSSearch   []string         `json:"dnsSearch,omitempty"`
	DNSOptions  []string         `json:"dnsOptions,omitempty"`
	ExtraHosts  []string         `json:"extraHosts,omitempty"`
	Mounts      []MountSpec      `json:"mounts,omitempty"`
}

// State is what happened to the workload so far.
type State struct {
	Status       Status    `json:"status"`
	Pid          int       `json:"pid,omitempty"`
	PidStart     uint64    `json:"pidStart,omitempty"`
	MonitorPid   int       `json:"monitorPid,omitempty"`
	MonitorStart uint64    `json:"monitorStart,omitempty"`
	ExitCode     int       `json:"exitCode"`
	Error        string    `json:"error,omitempty"`
	StartedAt    time.Time `json:"startedAt,omitempty"`
	FinishedAt   time.Time `json:"finishedAt,omitempty"`
	// RestartCount counts `berth restart`s and starts after the first.
	RestartCount int `json:"restartCount,omitempty"`
}

// Container is one workload's record.
type Container struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	ImageID string    `json:"imageID"`
	Created time.Time `json:"created"`
	Config  Config    `json:"config"`
	// Runtime is the resolved backend: the OCI runtime binary's path, or "vm".
	Runtime string `json:"runtime"`
	// RootfsMounts mount the workload's root filesystem (its writable layer
	// over the image's layers), as the snapshotter described them at create.
	RootfsMounts []snapshot.Mount `json:"rootfsMounts"`
	// ImageConfig is the image's run configuration (Entrypoint, Cmd, Env…)
	// as it was at create, so starting never needs the image store.
	ImageConfig v1.Config `json:"imageConfig"`
	State       State     `json:"state"`
	// Mounts are Config.Mounts and the image's VOLUMEs as resolved at
	// create (anonymous volumes named).
	Mounts []MountSpec `json:"mounts,omitempty"`
	// NetworkSettings describe the network the current run holds.
	NetworkSettings *NetworkSettings `json:"networkSettings,omitempty"`
}

// Store is the metadata database.
type Store struct {
	path string
}

// Open returns the store whose database lives in dir (created if needed).
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", dir, err)
	}
	return &Store{path: filepath.Join(dir, "berth.db")}, nil
}

func (s *Store) do(ctx context.Context, write bool, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: 30 * time.Second, ReadOnly: false})
	if err != nil {
		return fmt.Errorf("open state database %s: %w", s.path, err)
	}
	defer db.Close()
	if write {
		return db.Update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketContainers, bucketNames} {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return fn(tx)
		})
	}
	return db.View(fn)
}

// Add stores a new record; the ID and the name must both be unused.
func (s *Store) Add(ctx context.Context, c *Container) error {
	return s.do(ctx, true, func(tx *bolt.Tx) error {
		names := tx.Bucket(bucketNames)
		if id := names.Get([]byte(c.Name)); id != nil {
			return fmt.Errorf("container name %q is already in use by container %s: remove it or pick another name: %w", c.Name, string(id)[:12], errdefs.ErrAlreadyExists)
		}
		cs := tx.Bucket(bucketContainers)
		if cs.Get([]byte(c.ID)) != nil {
			return fmt.Errorf("container %s: %w", c.ID, errdefs.ErrAlreadyExists)
		}
		if err := names.Put([]byte(c.Name), []byte(c.ID)); err != nil {
			return err
		}
		return put(cs, c)
	})
}

func put(b *bolt.Bucket, c *Container) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return b.Put([]byte(c.ID), data)
}

// Update applies fn to the record with that exact ID, atomically.
func (s *Store) Update(ctx context.Context, id string, fn func(c *Container) error) (*Container, error) {
	var out *Container
	err := s.do(ctx, true, func(tx *bolt.Tx) error {
		cs := tx.Bucket(bucketContainers)
		data := cs.Get([]byte(id))
		if data == nil {
			return fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
		}
		var c Container
		if err := json.Unmarshal(data, &c); err != nil {
			return fmt.Errorf("decode container %s: %w", id, err)
		}
		if err := fn(&c); err != nil {
			return err
		}
		out = &c
		return put(cs, &c)
	})
	return out, err
}

// Delete removes the record with that exact ID; a missing record is not an error.
func (s *Store) Delete(ctx context.Context, id string) error {
	return s.do(ctx, true, func(tx *bolt.Tx) error {
		cs := tx.Bucket(bucketContainers)
		data := cs.Get([]byte(id))
		if data == nil {
			return nil
		}
		var c Container
		if err := json.Unmarshal(data, &c); err == nil {
			names := tx.Bucket(bucketNames)
			if string(names.Get([]byte(c.Name))) == id {
				if err := names.Delete([]byte(c.Name)); err != nil {
					return err
				}
			}
		}
		return cs.Delete([]byte(id))
	})
}

// ErrAmbiguous is returned when an ID prefix matches several containers.
var ErrAmbiguous = errors.New("ambiguous container ID prefix")

// Get finds a record by exact name, full ID or unique ID prefix.
func (s *Store) Get(ctx context.Context, ref string) (*Container, error) {
	var out *Container
	err := s.do(ctx, false, func(tx *bolt.Tx) error {
		cs := tx.Bucket(bucketContainers)
		if cs == nil {
			return fmt.Errorf("no such container: %s: %w", ref, errdefs.ErrNotFound)
		}
		id := ""
		if v := tx.Bucket(bucketNames).Get([]byte(ref)); v != nil {
			id = string(v)
		} else if ref != "" {
			c := cs.Cursor()
			for k, _ := c.Seek([]byte(ref)); k != nil && strings.HasPrefix(string(k), ref); k, _ = c.Next() {
				if id != "" {
					return fmt.Errorf("%q matches several containers: %w: %w", ref, ErrAmbiguous, errdefs.ErrInvalidArgument)
				}
				id = string(k)
			}
		}
		if id == "" {
			return fmt.Errorf("no such container: %s: %w", ref, errdefs.ErrNotFound)
		}
		var c Container
		if err := json.Unmarshal(cs.Get([]byte(id)), &c); err != nil {
			return fmt.Errorf("decode container %s: %w", id, err)
		}
		out = &c
		return nil
	})
	return out, err
}

// List returns every record, newest first.
func (s *Store) List(ctx context.Context) ([]*Container, error) {
	var out []*Container
	err := s.do(ctx, false, func(tx *bolt.Tx) error {
		cs := tx.Bucket(bucketContainers)
		if cs == nil {
			return nil
		}
		return cs.ForEach(func(k, v []byte) error {
			var c Container
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("decode container %s: %w", k, err)
			}
			out = append(out, &c)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, err
}
