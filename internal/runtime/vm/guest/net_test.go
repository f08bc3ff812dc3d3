package guest

import (
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

func TestParseNetwork(t *testing.T) {
	n := &agentproto.Network{
		Interfaces: []agentproto.Interface{
			{Name: "eth0", MAC: "0A:58:0a:58:00:05", MTU: 1500, Addresses: []string{"10.88.0.5/16", "fd00::5/64"}},
			{Name: "eth1", MAC: "0a:58:0a:59:00:07"},
		},
		Routes: []agentproto.Route{
			{Dst: "192.0.2.0/24", Device: "eth1", Metric: 20},
			{Dst: "0.0.0.0/0", Gateway: "10.88.0.1", Device: "eth0", Source: "10.88.0.5"},
		},
	}
	p, err := parseNetwork(n)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.ifaces) != 2 || p.ifaces[0].name != "eth0" || p.ifaces[0].mac.String() != "0a:58:0a:58:00:05" || p.ifaces[0].mtu != 1500 {
		t.Fatalf("ifaces = %+v", p.ifaces)
	}
	a := p.ifaces[0].addrs
	if len(a) != 2 || a[0].IPNet.String() != "10.88.0.5/16" || a[0].Flags != 0 || a[1].Flags&unix.IFA_F_NODAD == 0 {
		t.Fatalf("addresses = %+v", a)
	}
	if len(p.routes) != 2 {
		t.Fatalf("routes = %+v", p.routes)
	}
	if r := p.routes[0]; r.device != "eth1" || r.route.Dst.String() != "192.0.2.0/24" || r.route.Gw != nil || r.route.Scope != netlink.SCOPE_LINK || r.route.Priority != 20 {
		t.Errorf("on-link route = %+v", r)
	}
	if r := p.routes[1]; r.device != "eth0" || r.route.Dst.String() != "0.0.0.0/0" || !r.route.Gw.Equal(net.ParseIP("10.88.0.1")) ||
		r.route.Scope != netlink.SCOPE_UNIVERSE || !r.route.Src.Equal(net.ParseIP("10.88.0.5")) {
		t.Errorf("default route = %+v", r)
	}

	bad := []struct {
		name string
		n    agentproto.Network
		want string
	}{
		{"bad MAC", agentproto.Network{Interfaces: []agentproto.Interface{{Name: "eth0", MAC: "nope"}}}, "MAC"},
		{"no name", agentproto.Network{Interfaces: []agentproto.Interface{{MAC: "0a:58:0a:58:00:05"}}}, "name"},
		{"long name", agentproto.Network{Interfaces: []agentproto.Interface{{Name: "a-very-long-name0", MAC: "0a:58:0a:58:00:05"}}}, "name"},
		{"twice", agentproto.Network{Interfaces: []agentproto.Interface{{Name: "eth0", MAC: "0a:58:0a:58:00:05"}, {Name: "eth1", MAC: "0a:58:0a:58:00:05"}}}, "twice"},
		{"bad address", agentproto.Network{Interfaces: []agentproto.Interface{{Name: "eth0", MAC: "0a:58:0a:58:00:05", Addresses: []string{"10.88.0.5"}}}}, "address"},
		{"route to no device", agentproto.Network{Interfaces: []agentproto.Interface{{Name: "eth0", MAC: "0a:58:0a:58:00:05"}}, Routes: []agentproto.Route{{Dst: "0.0.0.0/0", Device: "eth1"}}}, "no interface"},
		{"bad gateway", agentproto.Network{Interfaces: []agentproto.Interface{{Name: "eth0", MAC: "0a:58:0a:58:00:05"}}, Routes: []agentproto.Route{{Dst: "0.0.0.0/0", Gateway: "x", Device: "eth0"}}}, "gateway"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseNetwork(&tt.n); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one about %s", err, tt.want)
			}
		})
	}
}

func TestConfigureNetworkNil(t *testing.T) {
	// No network (or an empty one) touches nothing: the guest keeps lo only.
	if err := configureNetwork(nil); err != nil {
		t.Fatal(err)
	}
	if err := configureNetwork(&agentproto.Network{}); err != nil {
		t.Fatal(err)
	}
}
