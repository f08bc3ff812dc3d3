package network

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/containernetworking/cni/libcni"
)

func TestConfList(t *testing.T) {
	for _, internal := range []bool{false, true} {
		n := &Network{Name: "app", Bridge: "br-test", Subnet: "10.89.3.0/24", Gateway: "10.89.3.1", Internal: internal}
		data, err := ConfList(n, "/run/berth/cni/networks")
		if err != nil {
			t.Fatal(err)
		}
		list, err := libcni.ConfListFromBytes(data)
		if err != nil {
			t.Fatalf("libcni refuses the conflist: %v\n%s", err, data)
		}
		var types []string
		for _, p := range list.Plugins {
			types = append(types, p.Network.Type)
		}
		if got := strings.Join(types, ","); got != "bridge,portmap,firewall,tuning" || list.Name != "app" || list.CNIVersion != CNIVersion {
			t.Fatalf("plugins %s name %s version %s", got, list.Name, list.CNIVersion)
		}
		var bridge struct {
			Bridge    string `json:"bridge"`
			IsGateway bool   `json:"isGateway"`
			IPMasq    bool   `json:"ipMasq"`
			IPAM      struct {
				Type    string                `json:"type"`
				DataDir string                `json:"dataDir"`
				Ranges  [][]map[string]string `json:"ranges"`
				Routes  []map[string]string   `json:"routes"`
			} `json:"ipam"`
		}
		if err := json.Unmarshal(list.Plugins[0].Bytes, &bridge); err != nil {
			t.Fatal(err)
		}
		if bridge.Bridge != "br-test" || !bridge.IsGateway || bridge.IPAM.Type != "host-local" || bridge.IPAM.DataDir != "/run/berth/cni/networks" {
			t.Errorf("bridge plugin: %+v", bridge)
		}
		if r := bridge.IPAM.Ranges[0][0]; r["subnet"] != "10.89.3.0/24" || r["gateway"] != "10.89.3.1" {
			t.Errorf("range %v", r)
		}
		if internal == bridge.IPMasq || internal == (len(bridge.IPAM.Routes) == 1) {
			t.Errorf("internal=%v: ipMasq %v routes %v", internal, bridge.IPMasq, bridge.IPAM.Routes)
		}
		var pm struct {
			Capabilities map[string]bool `json:"capabilities"`
			SNAT         bool            `json:"snat"`
		}
		_ = json.Unmarshal(list.Plugins[1].Bytes, &pm)
		if !pm.Capabilities["portMappings"] || !pm.SNAT {
			t.Errorf("portmap: %+v", pm)
		}
	}
}

func TestStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenStore(filepath.Join(dir, "networks"), filepath.Join(dir, "leases"))
	if err != nil {
		t.Fatal(err)
	}
	def, err := s.EnsureDefault(ctx)
	if err != nil || def.Subnet != DefaultSubnet || def.Bridge != DefaultBridge || def.Gateway != "10.88.0.1" {
		t.Fatalf("default: %+v %v", def, err)
	}
	a, err := s.Create(ctx, "a", CreateOptions{})
	if err != nil || !strings.HasPrefix(a.Subnet, "10.89.") || !strings.HasSuffix(a.Subnet, ".0/24") || a.Bridge != "br-"+a.ID[:12] {
		t.Fatalf("a: %+v %v", a, err)
	}
	b, err := s.Create(ctx, "nb", CreateOptions{})
	if err != nil || b.Subnet == a.Subnet {
		t.Fatalf("b got %s, a has %s (%v)", b.Subnet, a.Subnet, err)
	}
	c, err := s.Create(ctx, "c", CreateOptions{Subnet: "192.168.77.0/24", Gateway: "192.168.77.254", Internal: true})
	if err != nil || c.Gateway != "192.168.77.254" || !c.Internal {
		t.Fatalf("c: %+v %v", c, err)
	}
	if data, err := s.LoadConfList(c); err != nil || !strings.Contains(string(data), `"ipMasq": false`) {
		t.Errorf("conflist of c: %s %v", data, err)
	}
	for _, tc := range []struct {
		name string
		o    CreateOptions
		want error
	}{
		{"a", CreateOptions{}, errdefs.ErrAlreadyExists},
		{"host", CreateOptions{}, errdefs.ErrInvalidArgument},
		{"bad name", CreateOptions{}, errdefs.ErrInvalidArgument},
		{"d", CreateOptions{Subnet: "192.168.77.128/25"}, errdefs.ErrConflict},
		{"e", CreateOptions{Subnet: "nonsense"}, errdefs.ErrInvalidArgument},
		{"f", CreateOptions{Subnet: "10.200.0.0/24", Gateway: "10.201.0.1"}, errdefs.ErrInvalidArgument},
	} {
		if _, err := s.Create(ctx, tc.name, tc.o); !errors.Is(err, tc.want) {
			t.Errorf("Create(%q, %+v) = %v, want %v", tc.name, tc.o, err, tc.want)
		}
	}
	if got, err := s.Get(ctx, a.ID[:10]); err != nil || got.Name != "a" {
		t.Errorf("Get by ID prefix: %v %v", got, err)
	}
	all, _ := s.List(ctx)
	if len(all) != 4 {
		t.Errorf("List = %d networks", len(all))
	}
	if err := s.Remove(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "nb"); !errdefs.IsNotFound(err) {
		t.Errorf("Get after Remove: %v", err)
	}
}

func TestHosts(t *testing.T) {
	got := string(Hosts(
		HostEntry{IP: "10.88.0.2", Names: []string{"abc123", "web", "api"}},
		[]HostEntry{{IP: "10.88.0.3", Names: []string{"db", "abc"}}, {IP: "10.88.0.4", Names: []string{"web"}}},
		[]HostEntry{{IP: "192.0.2.1", Names: []string{"db"}}},
	))
	want := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"192.0.2.1\tdb\n10.88.0.2\tabc123 web api\n10.88.0.3\tabc\n"
	if got != want {
		t.Errorf("Hosts:\n%s\nwant:\n%s", got, want)
	}
	if got := string(ResolvConf(DNS{Nameservers: []string{"1.1.1.1"}, Search: []string{"a.test"}, Options: []string{"ndots:2"}})); got != "search a.test\nnameserver 1.1.1.1\noptions ndots:2\n" {
		t.Errorf("ResolvConf: %q", got)
	}
}

func TestHostDNS(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	write := func(s string) {
		if err := writeAtomic(p, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	write("# comment\nnameserver 127.0.0.53\nsearch lan\noptions edns0\n")
	if d := HostDNS(p, true); strings.Join(d.Nameservers, ",") != "8.8.8.8,8.8.4.4" || d.Search[0] != "lan" || d.Options[0] != "edns0" {
		t.Errorf("loopback-only resolver in a namespace: %+v", d)
	}
	if d := HostDNS(p, false); strings.Join(d.Nameservers, ",") != "127.0.0.53" {
		t.Errorf("host network keeps loopback: %+v", d)
	}
	write("nameserver 10.0.0.2\nnameserver 127.0.0.1\n")
	if d := HostDNS(p, true); strings.Join(d.Nameservers, ",") != "10.0.0.2" {
		t.Errorf("mixed: %+v", d)
	}
}

func TestReleaseLeases(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "berth"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"10.88.0.2": "dead\r\neth0", "10.88.0.3": "alive\r\neth0", "lock": "", "last_reserved_ip.0": "10.88.0.3"} {
		if err := os.WriteFile(filepath.Join(dir, "berth", name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got := ReleaseLeases(dir, func(id string) bool { return id == "alive" })
	if strings.Join(got, ",") != "berth/10.88.0.2" {
		t.Errorf("released %v", got)
	}
}
