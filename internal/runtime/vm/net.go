package vm

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
	"slices"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

// How a VM joins its workload's network namespace (Kata's "tcfilter"
// model): for each interface CNI (or Podman) put in the namespace, a tap
// device is created next to it and tc moves every frame between the two
// (ingress qdisc, a match-all u32 filter, mirred egress redirect, both
// ways). QEMU gets the tap as a file descriptor and gives the guest a
// virtio-net NIC with the interface's MAC; the agent gives that NIC the
// interface's name, addresses and routes. The namespace's own stack never
// sees a frame, so the guest is the interface as far as the bridge, the
// other members and portmap's DNAT rules can tell. Nothing outlives the
// namespace: the tap is not persistent (it goes when QEMU's descriptor
// closes) and the qdiscs go with their interfaces.

// NIC is one guest network interface as QEMU sees it.
type NIC struct {
	// ID names the netdev (net0, net1…).
	ID string
	// MAC is the guest device's MAC: that of the namespace interface.
	MAC string
	// FD is the tap's descriptor number in QEMU (ExtraFiles start at 3).
	FD int
}

// netnsPath is the network namespace the bundle's spec joins, or "" when
// the workload gets a new one (no network beyond lo).
func netnsPath(s *specs.Spec) string {
	if s.Linux == nil {
		return ""
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// tapName names the tap mirroring interface ifName, the i-th mirrored one
// (tap0_eth0), within the kernel's 15 bytes.
func tapName(i int, ifName string) string {
	n := "tap" + strconv.Itoa(i) + "_" + ifName
	if len(n) > unix.IFNAMSIZ-1 {
		n = n[:unix.IFNAMSIZ-1]
	}
	return n
}

// planNetwork turns what a namespace holds into the guest's configuration:
// every interface but lo and taps (in index order), its global addresses,
// and the main table's routes on those interfaces other than the ones the
// kernel derives from addresses (the guest's kernel adds those itself).
// It also returns the links to mirror, in the order of the interfaces.
func planNetwork(links []netlink.Link, addrs map[int][]netlink.Addr, routes []netlink.Route) (*agentproto.Network, []netlink.Link) {
	links = slices.Clone(links)
	slices.SortFunc(links, func(a, b netlink.Link) int { return cmp.Compare(a.Attrs().Index, b.Attrs().Index) })
	n := &agentproto.Network{}
	var mirrored []netlink.Link
	names := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || l.Type() == "tuntap" || len(a.HardwareAddr) != 6 {
			continue
		}
		iface := agentproto.Interface{Name: a.Name, MAC: a.HardwareAddr.String(), MTU: a.MTU}
		for _, ad := range addrs[a.Index] {
			if ad.IPNet == nil || ad.Scope != unix.RT_SCOPE_UNIVERSE {
				continue // link-local: the guest's kernel makes its own from the MAC
			}
			iface.Addresses = append(iface.Addresses, ad.IPNet.String())
		}
		n.Interfaces = append(n.Interfaces, iface)
		mirrored = append(mirrored, l)
		names[a.Index] = a.Name
	}
	for _, r := range routes {
		dev, ok := names[r.LinkIndex]
		if !ok || r.Protocol == unix.RTPROT_KERNEL || (r.Type != 0 && r.Type != unix.RTN_UNICAST) ||
			(r.Table != 0 && r.Table != unix.RT_TABLE_MAIN) {
			continue
		}
		gr := agentproto.Route{Device: dev, Metric: r.Priority}
		switch {
		case r.Dst != nil:
			gr.Dst = r.Dst.String()
		case r.Family == unix.AF_INET6 || (r.Gw != nil && r.Gw.To4() == nil):
			gr.Dst = "::/0"
		default:
			gr.Dst = "0.0.0.0/0"
		}
		if r.Gw != nil {
			gr.Gateway = r.Gw.String()
		}
		if r.Src != nil {
			gr.Source = r.Src.String()
		}
		n.Routes = append(n.Routes, gr)
	}
	// On-link routes first: a gateway must be reachable when its route is added.
	slices.SortStableFunc(n.Routes, func(a, b agentproto.Route) int {
		return cmp.Compare(min(len(a.Gateway), 1), min(len(b.Gateway), 1))
	})
	return n, mirrored
}

// netAttachment is what joining a namespace produced: the taps' files (for
// QEMU) and the guest's configuration.
type netAttachment struct {
	taps    []*os.File
	nics    []NIC
	network *agentproto.Network
}

// close releases the taps this process still holds; once QEMU (which has
// its own descriptors) is gone too, the kernel removes them.
func (a *netAttachment) close() {
	for _, f := range a.taps {
		f.Close()
	}
	a.taps = nil
}

// attachNetNS mirrors every interface of the namespace at path into a new
// tap (see the top of this file). firstFD is the descriptor number the
// first tap will have in QEMU.
func attachNetNS(path string, firstFD int) (*netAttachment, error) {
	var att *netAttachment
	err := inNetNS(path, func() (err error) {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		links, err := h.LinkList()
		if err != nil {
			return fmt.Errorf("list interfaces: %w", err)
		}
		addrs := map[int][]netlink.Addr{}
		for _, l := range links {
			as, err := h.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				return fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
			}
			addrs[l.Attrs().Index] = as
		}
		routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("list routes: %w", err)
		}
		network, mirrored := planNetwork(links, addrs, routes)
		att = &netAttachment{network: network}
		defer func() {
			if err != nil {
				att.close()
				for _, l := range mirrored {
					_ = h.QdiscDel(ingressQdisc(l.Attrs().Index))
				}
			}
		}()
		for i, l := range mirrored {
			tap, f, err := createTap(h, tapName(i, l.Attrs().Name), l.Attrs().MTU)
			if err != nil {
				return fmt.Errorf("mirror %s: %w", l.Attrs().Name, err)
			}
			att.taps = append(att.taps, f)
			if err := redirect(h, l, tap); err != nil {
				return fmt.Errorf("mirror %s: %w", l.Attrs().Name, err)
			}
			if err := redirect(h, tap, l); err != nil {
				return fmt.Errorf("mirror %s: %w", l.Attrs().Name, err)
			}
			att.nics = append(att.nics, NIC{ID: "net" + strconv.Itoa(i), MAC: l.Attrs().HardwareAddr.String(), FD: firstFD + i})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("join network namespace %s: %w", path, err)
	}
	if len(att.network.Interfaces) == 0 {
		att.network = nil
	}
	return att, nil
}

// inNetNS runs fn on an OS thread that joined the network namespace at
// path, and returns the thread to the scheduler only once it is back in
// its own namespace. The thread must not simply exit (a locked goroutine
// that returns takes its thread along): children started with Pdeathsig
// from that thread, such as another VM's QEMU or virtiofsd, would be
// killed with it.
func inNetNS(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: better this thread ends than run other
			// goroutines in the namespace.
			errc <- errors.Join(ferr, fmt.Errorf("leave network namespace: %w", err))
			return
		}
		goruntime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// createTap creates a tap in the calling thread's namespace (a tun device
// belongs to the namespace its /dev/net/tun was opened in), with the
// virtio-net header QEMU uses for offloads, and brings it up with mtu.
// The device exists while the returned file (or a copy of it) is open.
func createTap(h *netlink.Handle, name string, mtu int) (netlink.Link, *os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	f := os.NewFile(uintptr(fd), "tap:"+name)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("create tap %s: %w", name, err)
	}
	tap, err := h.LinkByName(name)
	if err == nil && mtu > 0 {
		err = h.LinkSetMTU(tap, mtu)
	}
	if err == nil {
		err = h.LinkSetUp(tap)
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("set up tap %s: %w", name, err)
	}
	return tap, f, nil
}

func ingressQdisc(index int) *netlink.Ingress {
	return &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: index,
		Handle:    netlink.MakeHandle(0xffff, 0),
		Parent:    netlink.HANDLE_INGRESS,
	}}
}

// redirect sends every frame arriving on from out of to: a fresh ingress
// qdisc on from with one u32 filter that matches everything and a mirred
// egress redirect (tc … u32 match u8 0 0 action mirred egress redirect).
func redirect(h *netlink.Handle, from, to netlink.Link) error {
	q := ingressQdisc(from.Attrs().Index)
	_ = h.QdiscDel(q) // a stale one from an earlier VM in this namespace
	if err := h.QdiscAdd(q); err != nil {
		return fmt.Errorf("add ingress qdisc to %s: %w", from.Attrs().Name, err)
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index,
			Parent:    netlink.MakeHandle(0xffff, 0),
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		// A nil Sel is u32's match-all (one zero key, terminal).
		Actions: []netlink.Action{netlink.NewMirredAction(to.Attrs().Index)},
	}
	if err := h.FilterAdd(f); err != nil {
		_ = h.QdiscDel(q)
		return fmt.Errorf("redirect %s to %s: %w", from.Attrs().Name, to.Attrs().Name, err)
	}
	return nil
}
