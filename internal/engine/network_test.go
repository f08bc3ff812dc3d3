package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestHostsFor(t *testing.T) {
	mk := func(id, name string, eps ...state.Endpoint) *state.Container {
		return &state.Container{ID: strings.Repeat(id, 64), Name: name, NetworkSettings: &state.NetworkSettings{Mode: networkBridge, Networks: eps}}
	}
	self := mk("a", "web", state.Endpoint{Network: "app", IPAddress: "10.89.0.2/24", Aliases: []string{"api"}})
	self.Config.ExtraHosts = []string{"gw:host-gateway", "db.example:192.0.2.7"}
	self.NetworkSettings.Networks[0].Gateway = "10.89.0.1"
	peer := mk("b", "db", state.Endpoint{Network: "app", IPAddress: "10.89.0.3/24"})
	stranger := mk("c", "other", state.Endpoint{Network: "elsewhere", IPAddress: "10.89.1.2/24"})
	stopped := &state.Container{ID: strings.Repeat("d", 64), Name: "gone"}
	got := string(hostsFor(self, []*state.Container{self, peer, stranger, stopped}))
	for _, want := range []string{"10.89.0.1\tgw\n", "192.0.2.7\tdb.example\n", "10.89.0.2\taaaaaaaaaaaa web api\n", "10.89.0.3\tdb bbbbbbbbbbbb\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts lacks %q:\n%s", want, got)
		}
	}
	for _, not := range []string{"other", "gone"} {
		if strings.Contains(got, not) {
			t.Errorf("hosts names %s:\n%s", not, got)
		}
	}
}

func TestWithoutNamespace(t *testing.T) {
	s := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}}}}
	if err := withoutNamespace(specs.NetworkNamespace)(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.Namespaces) != 1 || s.Linux.Namespaces[0].Type != specs.PIDNamespace {
		t.Errorf("namespaces %+v", s.Linux.Namespaces)
	}
}

// TestNormalizeNetworkConfigVM: a microVM gets the default network like a
// container, refuses the host's network and may ask for none.
func TestNormalizeNetworkConfigVM(t *testing.T) {
	e := &Engine{root: t.TempDir(), stateDir: t.TempDir()}
	ctx := context.Background()
	tests := []struct {
		name     string
		cfg      state.Config
		mode     string
		networks []string
		err      error
	}{
		{"default", state.Config{Isolation: state.IsolationVM}, networkBridge, []string{"berth"}, nil},
		{"ports on the default", state.Config{Isolation: state.IsolationVM, Ports: []state.PortBinding{{ContainerPort: 80, Protocol: "tcp"}}}, networkBridge, []string{"berth"}, nil},
		{"none", state.Config{Isolation: state.IsolationVM, NetworkMode: state.NetworkNone}, state.NetworkNone, nil, nil},
		{"host refused", state.Config{Isolation: state.IsolationVM, NetworkMode: state.NetworkHost}, "", nil, errdefs.ErrInvalidArgument},
		{"host for a container", state.Config{NetworkMode: state.NetworkHost}, state.NetworkHost, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			err := e.normalizeNetworkConfig(ctx, &cfg)
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), "-p") {
					t.Fatalf("err = %v, want %v with a hint", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var nets []string
			for _, ep := range cfg.Networks {
				nets = append(nets, ep.Network)
			}
			if cfg.NetworkMode != tt.mode || !slices.Equal(nets, tt.networks) {
				t.Fatalf("mode %q networks %v, want %q %v", cfg.NetworkMode, nets, tt.mode, tt.networks)
			}
		})
	}
}

func TestVMNICsFixed(t *testing.T) {
	c := &state.Container{Name: "v", Config: state.Config{Isolation: state.IsolationVM}, State: state.State{Status: state.StatusRunning}}
	if err := vmNICsFixed(c, "connect", "app"); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("running VM: %v, want a conflict", err)
	}
	c.State.Status = state.StatusExited
	if err := vmNICsFixed(c, "connect", "app"); err != nil {
		t.Errorf("stopped VM: %v", err)
	}
	c.State.Status, c.Config.Isolation = state.StatusRunning, state.IsolationContainer
	if err := vmNICsFixed(c, "connect", "app"); err != nil {
		t.Errorf("running container: %v", err)
	}
}

// TestNetFilesDir: the files berth bind-mounts over /etc live alone in one
// directory (a microVM shares it whole), and syncHosts rewrites them there.
func TestNetFilesDir(t *testing.T) {
	e := &Engine{root: t.TempDir(), stateDir: t.TempDir()}
	id := strings.Repeat("a", 64)
	mounts, err := e.writeEtcFiles(id, "h1")
	if err != nil {
		t.Fatal(err)
	}
	dir := e.netFilesDir(id)
	if filepath.Dir(dir) != e.containerDir(id) {
		t.Fatalf("net files dir %s is not in the container dir", dir)
	}
	for _, m := range mounts {
		if filepath.Dir(m.Source) != dir {
			t.Errorf("%s is bind-mounted from %s, outside %s", m.Destination, m.Source, dir)
		}
	}
	c := &state.Container{ID: id, Name: "web", NetworkSettings: &state.NetworkSettings{Mode: networkBridge, DNS: state.DNSConfig{Nameservers: []string{"192.0.2.53"}},
		Networks: []state.Endpoint{{Network: "app", IPAddress: "10.89.0.2/24"}}}}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, ent := range ents {
		names = append(names, ent.Name())
	}
	if !slices.Equal(names, []string{"hostname", "hosts"}) {
		t.Errorf("net files dir holds %v", names)
	}
	if e.db, err = state.Open(e.root); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Add(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	opts, err := e.networkSpecOpts(context.Background(), c)
	if err != nil || len(opts) == 0 {
		t.Fatalf("networkSpecOpts: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "hosts"))
	if !strings.Contains(string(b), "10.89.0.2\t"+id[:12]+" web") {
		t.Errorf("hosts after syncHosts:\n%s", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "resolv.conf")); !strings.Contains(string(b), "nameserver 192.0.2.53") {
		t.Errorf("resolv.conf:\n%s", b)
	}
}
