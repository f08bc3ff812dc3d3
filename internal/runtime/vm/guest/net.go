package guest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

// nicTimeout bounds the wait for the NICs the host promised to appear.
const nicTimeout = 5 * time.Second

// ifacePlan is one NIC to configure, parsed from the Setup message.
type ifacePlan struct {
	name  string
	mac   net.HardwareAddr
	mtu   int
	addrs []*netlink.Addr
}

// routePlan is a route to add once its device exists under its new name.
type routePlan struct {
	device string
	route  netlink.Route // without LinkIndex
}

// netPlan is the whole network configuration, checked before anything is
// changed.
type netPlan struct {
	ifaces []ifacePlan
	routes []routePlan
}

// parseNetwork checks n and turns it into netlink values.
func parseNetwork(n *agentproto.Network) (netPlan, error) {
	var p netPlan
	names := map[string]bool{}
	macs := map[string]bool{}
	for _, in := range n.Interfaces {
		if in.Name == "" || len(in.Name) >= unix.IFNAMSIZ || strings.ContainsAny(in.Name, "/: \t\n") {
			return p, fmt.Errorf("interface name %q is not valid", in.Name)
		}
		mac, err := net.ParseMAC(in.MAC)
		if err != nil || len(mac) != 6 {
			return p, fmt.Errorf("interface %s: MAC %q is not valid", in.Name, in.MAC)
		}
		if names[in.Name] || macs[mac.String()] {
			return p, fmt.Errorf("interface %s (%s) is listed twice", in.Name, mac)
		}
		names[in.Name], macs[mac.String()] = true, true
		ip := ifacePlan{name: in.Name, mac: mac, mtu: in.MTU}
		for _, a := range in.Addresses {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return p, fmt.Errorf("interface %s: address %q: %w", in.Name, a, err)
			}
			if addr.IP.To4() == nil {
				addr.Flags |= unix.IFA_F_NODAD // the host's namespace did the DAD
			}
			ip.addrs = append(ip.addrs, addr)
		}
		p.ifaces = append(p.ifaces, ip)
	}
	for _, r := range n.Routes {
		if !names[r.Device] {
			return p, fmt.Errorf("route to %s: no interface %q", r.Dst, r.Device)
		}
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return p, fmt.Errorf("route to %q: %w", r.Dst, err)
		}
		nr := netlink.Route{Dst: dst, Priority: r.Metric, Scope: netlink.SCOPE_LINK}
		if r.Gateway != "" {
			if nr.Gw = net.ParseIP(r.Gateway); nr.Gw == nil {
				return p, fmt.Errorf("route to %s: gateway %q is not an IP address", r.Dst, r.Gateway)
			}
			nr.Scope = netlink.SCOPE_UNIVERSE
		}
		if r.Source != "" {
			if nr.Src = net.ParseIP(r.Source); nr.Src == nil {
				return p, fmt.Errorf("route to %s: source %q is not an IP address", r.Dst, r.Source)
			}
		}
		p.routes = append(p.routes, routePlan{device: r.Device, route: nr})
	}
	return p, nil
}

// configureNetwork gives the guest the network the host mirrored into it:
// each NIC, found by its MAC, renamed, with its MTU and addresses, up, and
// then the routes. Without n the guest keeps only lo.
func configureNetwork(n *agentproto.Network) error {
	if n == nil || len(n.Interfaces) == 0 {
		return nil
	}
	p, err := parseNetwork(n)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	links, err := findNICs(p.ifaces, nicTimeout)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	// Rename in two passes, so eth0 and eth1 can swap names.
	for i, l := range links {
		if l.Attrs().Name == p.ifaces[i].name {
			continue
		}
		if err := netlink.LinkSetDown(l); err != nil {
			return fmt.Errorf("network: %s down: %w", l.Attrs().Name, err)
		}
		if err := netlink.LinkSetName(l, "berthnic"+strconv.Itoa(i)); err != nil {
			return fmt.Errorf("network: rename %s: %w", l.Attrs().Name, err)
		}
	}
	for i, l := range links {
		in := p.ifaces[i]
		if l.Attrs().Name != in.name {
			if err := netlink.LinkSetName(l, in.name); err != nil {
				return fmt.Errorf("network: rename the NIC %s to %s: %w", in.mac, in.name, err)
			}
		}
		if in.mtu > 0 && in.mtu != l.Attrs().MTU {
			if err := netlink.LinkSetMTU(l, in.mtu); err != nil {
				return fmt.Errorf("network: %s mtu %d: %w", in.name, in.mtu, err)
			}
		}
		for _, a := range in.addrs {
			if err := netlink.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("network: %s address %s: %w", in.name, a.IPNet, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("network: %s up: %w", in.name, err)
		}
	}
	for _, r := range p.routes {
		for i, in := range p.ifaces {
			if in.name == r.device {
				r.route.LinkIndex = links[i].Attrs().Index
			}
		}
		err := netlink.RouteAdd(&r.route)
		if errors.Is(err, unix.EEXIST) {
			// A second route to the same place (two networks' default
			// routes): appended after the first, as in the namespace.
			err = netlink.RouteAppend(&r.route)
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("network: route %s via %s dev %s: %w", r.route.Dst, r.route.Gw, r.device, err)
		}
	}
	return nil
}

// findNICs returns the link of each interface, by MAC, waiting up to
// timeout for the virtio-net driver to register them.
func findNICs(ifaces []ifacePlan, timeout time.Duration) ([]netlink.Link, error) {
	deadline := time.Now().Add(timeout)
	for {
		all, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		found := make([]netlink.Link, len(ifaces))
		var missing []string
		for i, in := range ifaces {
			for _, l := range all {
				if l.Attrs().HardwareAddr.String() == in.mac.String() {
					found[i] = l
				}
			}
			if found[i] == nil {
				missing = append(missing, in.name+" ("+in.mac.String()+")")
			}
		}
		if len(missing) == 0 {
			return found, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no NIC for %s after %s (is virtio_net loaded?)", strings.Join(missing, ", "), timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
