package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/berthdev/berth/internal/engine/state"
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
