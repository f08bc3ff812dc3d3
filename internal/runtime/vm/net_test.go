package vm

import (
	"context"
	"fmt"
	"github.com/berthdev/berth/internal/network"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

func cidr(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func subnet(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }

func TestPlanNetwork(t *testing.T) {
	mac0, _ := net.ParseMAC("0a:58:0a:58:00:05")
	mac1, _ := net.ParseMAC("0a:58:0a:59:00:07")
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1, Name: "lo", Flags: net.FlagLoopback | net.FlagUp, MTU: 65536}}
	eth1 := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 7, Name: "eth1", HardwareAddr: mac1, MTU: 1400}}
	eth0 := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 3, Name: "eth0", HardwareAddr: mac0, MTU: 1500}}
	tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: 9, Name: "tap0_eth0", HardwareAddr: mac0}}
	addrs := map[int][]netlink.Addr{
		1: {{IPNet: cidr("127.0.0.1/8"), Scope: unix.RT_SCOPE_HOST}},
		3: {{IPNet: cidr("10.88.0.5/16")}, {IPNet: cidr("fe80::858:aff:fe58:5/64"), Scope: unix.RT_SCOPE_LINK}, {IPNet: cidr("fd00::5/64")}},
		7: {{IPNet: cidr("10.89.0.7/24")}},
	}
	routes := []netlink.Route{
		{LinkIndex: 3, Gw: net.ParseIP("10.88.0.1"), Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT, Family: unix.AF_INET},
		{LinkIndex: 3, Dst: subnet("10.88.0.0/16"), Src: net.ParseIP("10.88.0.5"), Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_KERNEL, Scope: netlink.SCOPE_LINK},
		{LinkIndex: 7, Dst: subnet("10.89.0.0/24"), Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_KERNEL},
		{LinkIndex: 7, Dst: subnet("192.0.2.0/24"), Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_STATIC, Priority: 20},
		{LinkIndex: 3, Gw: net.ParseIP("fd00::1"), Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT, Family: unix.AF_INET6},
		{LinkIndex: 1, Dst: subnet("127.0.0.0/8"), Table: unix.RT_TABLE_MAIN},
		{LinkIndex: 9, Dst: subnet("198.51.100.0/24"), Table: unix.RT_TABLE_MAIN},
		{LinkIndex: 3, Dst: subnet("203.0.113.0/24"), Table: unix.RT_TABLE_MAIN, Type: unix.RTN_BLACKHOLE},
	}
	got, mirrored := planNetwork([]netlink.Link{eth1, tap, lo, eth0}, addrs, routes)
	want := &agentproto.Network{
		Interfaces: []agentproto.Interface{
			{Name: "eth0", MAC: "0a:58:0a:58:00:05", MTU: 1500, Addresses: []string{"10.88.0.5/16", "fd00::5/64"}},
			{Name: "eth1", MAC: "0a:58:0a:59:00:07", MTU: 1400, Addresses: []string{"10.89.0.7/24"}},
		},
		Routes: []agentproto.Route{
			{Dst: "192.0.2.0/24", Device: "eth1", Metric: 20},
			{Dst: "0.0.0.0/0", Gateway: "10.88.0.1", Device: "eth0"},
			{Dst: "::/0", Gateway: "fd00::1", Device: "eth0"},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("planNetwork =\n%+v\nwant\n%+v", got, want)
	}
	if len(mirrored) != 2 || mirrored[0] != netlink.Link(eth0) || mirrored[1] != netlink.Link(eth1) {
		t.Errorf("mirrored = %v, want eth0, eth1", mirrored)
	}

	// A namespace with only lo gives the guest no interfaces.
	if n, m := planNetwork([]netlink.Link{lo}, addrs, routes); len(n.Interfaces) != 0 || len(m) != 0 {
		t.Errorf("lo only: %+v %v", n, m)
	}
}

func TestTapName(t *testing.T) {
	for _, tt := range []struct {
		i    int
		name string
		want string
	}{{0, "eth0", "tap0_eth0"}, {12, "eth12", "tap12_eth12"}, {3, "averylongname0", "tap3_averylongn"}} {
		if got := tapName(tt.i, tt.name); got != tt.want || len(got) > 15 {
			t.Errorf("tapName(%d, %q) = %q, want %q", tt.i, tt.name, got, tt.want)
		}
	}
}

func TestNetnsPath(t *testing.T) {
	s := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/run/berth/netns/x"}}}}
	if got := netnsPath(s); got != "/run/berth/netns/x" {
		t.Errorf("netnsPath = %q", got)
	}
	s.Linux.Namespaces[1].Path = ""
	if got := netnsPath(s); got != "" {
		t.Errorf("netnsPath of a new namespace = %q", got)
	}
	if got := netnsPath(&specs.Spec{}); got != "" {
		t.Errorf("netnsPath without linux = %q", got)
	}
}

// TestAttachNetNS mirrors a veth in a scratch namespace into a tap and
// checks the tc redirects both ways; the tap goes with its descriptor.
func TestAttachNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ns, _ := vethPair(t, "0a:58:0a:63:00:02", "10.99.0.2/24", "10.99.0.1/24", 1450)
	att, err := attachNetNS(ns, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer att.close()
	want := &agentproto.Network{
		Interfaces: []agentproto.Interface{{Name: "eth0", MAC: "0a:58:0a:63:00:02", MTU: 1450, Addresses: []string{"10.99.0.2/24"}}},
		Routes:     []agentproto.Route{{Dst: "0.0.0.0/0", Gateway: "10.99.0.1", Device: "eth0"}},
	}
	if !reflect.DeepEqual(att.network, want) {
		t.Errorf("network = %+v, want %+v", att.network, want)
	}
	if !reflect.DeepEqual(att.nics, []NIC{{ID: "net0", MAC: "0a:58:0a:63:00:02", FD: 3}}) || len(att.taps) != 1 {
		t.Errorf("nics = %+v, taps %d", att.nics, len(att.taps))
	}
	var problems []string
	inNS(t, ns, func(h *netlink.Handle) error {
		eth, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		tap, err := h.LinkByName("tap0_eth0")
		if err != nil {
			return err
		}
		if tap.Attrs().MTU != 1450 || tap.Attrs().Flags&net.FlagUp == 0 {
			problems = append(problems, fmt.Sprintf("tap: mtu %d, flags %v", tap.Attrs().MTU, tap.Attrs().Flags))
		}
		for _, pair := range [][2]netlink.Link{{eth, tap}, {tap, eth}} {
			from, to := pair[0].Attrs(), pair[1].Attrs()
			fs, err := h.FilterList(pair[0], netlink.MakeHandle(0xffff, 0))
			if err != nil {
				return err
			}
			var u *netlink.U32
			if len(fs) == 1 {
				u, _ = fs[0].(*netlink.U32)
			}
			if u == nil || len(u.Actions) != 1 {
				problems = append(problems, fmt.Sprintf("%s: ingress filters %#v", from.Name, fs))
				continue
			}
			m, ok := u.Actions[0].(*netlink.MirredAction)
			if !ok || m.MirredAction != netlink.TCA_EGRESS_REDIR || m.Ifindex != to.Index {
				problems = append(problems, fmt.Sprintf("%s: action %#v, want egress redirect to %s", from.Name, u.Actions[0], to.Name))
			}
		}
		return nil
	})
	for _, p := range problems {
		t.Error(p)
	}
	att.close()
	inNS(t, ns, func(h *netlink.Handle) error {
		if _, err := h.LinkByName("tap0_eth0"); err == nil {
			problems = append(problems, "the tap outlived its descriptor")
		}
		return nil
	})
	for _, p := range problems {
		t.Error(p)
	}
}

// vethPair pins two scratch network namespaces joined by a veth: eth0
// (with mac, addr, mtu and a default route via peerAddr's IP) in the first,
// peer0 (peerAddr) in the second. It returns both namespaces' paths.
func vethPair(t *testing.T, mac, addr, peerAddr string, mtu int) (ns, peerNS string) {
	t.Helper()
	ns, peerNS = scratchNetNS(t), scratchNetNS(t)
	hw, _ := net.ParseMAC(mac)
	peerFile, err := os.Open(peerNS)
	if err != nil {
		t.Fatal(err)
	}
	defer peerFile.Close()
	inNS(t, ns, func(h *netlink.Handle) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", HardwareAddr: hw, MTU: mtu}, PeerName: "peer0",
			PeerNamespace: netlink.NsFd(peerFile.Fd())}
		if err := h.LinkAdd(veth); err != nil {
			return err
		}
		l, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: cidr(addr)}); err != nil {
			return err
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
		gw, _, _ := net.ParseCIDR(peerAddr)
		return h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw})
	})
	inNS(t, peerNS, func(h *netlink.Handle) error {
		l, err := h.LinkByName("peer0")
		if err != nil {
			return err
		}
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return err
		}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: cidr(peerAddr)}); err != nil {
			return err
		}
		return h.LinkSetUp(l)
	})
	return ns, peerNS
}

// scratchNetNS pins a new network namespace (with lo up) for the test.
func scratchNetNS(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ns")
	if err := network.NewNS(path); err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { network.RemoveNS(path) })
	inNS(t, path, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetUp(lo)
	})
	return path
}

// inNS runs fn with a netlink handle in the namespace at path; fn runs on
// another goroutine, so it reports through its error, not t.
func inNS(t *testing.T, path string, fn func(*netlink.Handle) error) {
	t.Helper()
	err := inNetNS(path, func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		return fn(h)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestVMNetwork boots a VM whose bundle joins a namespace holding eth0 (a
// veth to a peer namespace): the guest has eth0 with the namespace's MAC,
// MTU, address and default route, and guest and peer reach each other,
// both ways. After Delete the tap is gone from the namespace.
func TestVMNetwork(t *testing.T) {
	requiresVM(t)
	r := newTestRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns, peerNS := vethPair(t, "0a:58:0a:63:00:02", "10.99.0.2/24", "10.99.0.1/24", 1400)
	rootfs := t.TempDir()
	makeRootfs(t, rootfs)
	for _, a := range []string{"ip", "ping", "nc", "timeout"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	bundle := makeBundle(t, rootfs, []string{"sh", "-c", "echo pong | nc -l -p 7000; sleep 1000"}, func(s *specs.Spec) {
		s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: ns}}
	})
	id := fmt.Sprintf("vmnet%d", os.Getpid())
	t.Cleanup(func() { r.Delete(context.Background(), id, true) })
	p, err := r.Create(ctx, id, bundle, runtime.IO{Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := execOut(ctx, t, r, id, &specs.Process{Args: []string{"sh", "-c",
		"ip -o link show eth0; ip -o -4 addr show eth0; ip route; ping -c 1 -W 5 10.99.0.1 >/dev/null && echo ping-ok"}}, runtime.IO{})
	if code != 0 {
		t.Fatalf("guest network check: exit %d\n%s%s", code, out, stderr)
	}
	for _, want := range []string{"link/ether 0a:58:0a:63:00:02", "mtu 1400", "inet 10.99.0.2/24", "default via 10.99.0.1 dev eth0", "ping-ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest lacks %q:\n%s", want, out)
		}
	}
	// The peer reaches the guest's listener through the namespace's eth0.
	var got []byte
	for i := 0; i < 50; i++ {
		got, err = exec.Command("nsenter", "--net="+peerNS, "busybox", "nc", "-w", "3", "10.99.0.2", "7000").Output()
		if strings.TrimSpace(string(got)) == "pong" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.TrimSpace(string(got)) != "pong" {
		t.Errorf("peer → guest:7000 = %q, %v", got, err)
	}
	if err := r.Delete(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Logf("wait after delete: %v", err)
	}
	waitFor(t, 5*time.Second, "the tap to go with QEMU", func() bool {
		gone := false
		inNS(t, ns, func(h *netlink.Handle) error {
			_, err := h.LinkByName("tap0_eth0")
			gone = err != nil
			return nil
		})
		return gone
	})
}
