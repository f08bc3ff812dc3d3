package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/network"
	"github.com/berthdev/berth/internal/spec"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Network types callers use, re-exported so the CLI needs only the engine.
type (
	// Network is one berth network's definition.
	Network = network.Network
	// NetworkCreateOptions describe a new network.
	NetworkCreateOptions = network.CreateOptions
	// PortBinding publishes a workload's port on the host.
	PortBinding = state.PortBinding
	// EndpointConfig asks for a workload's membership of one network.
	EndpointConfig = state.EndpointConfig
	// NetworkSettings is what a workload's network set-up produced.
	NetworkSettings = state.NetworkSettings
)

// Network modes, re-exported from state.
const (
	NetworkNone    = state.NetworkNone
	NetworkHost    = state.NetworkHost
	NetworkDefault = state.NetworkDefault
	networkBridge  = "bridge"
)

func (e *Engine) netStore() (*network.Store, error) {
	return network.OpenStore(filepath.Join(e.root, "networks"), filepath.Join(e.stateDir, "cni", "networks"))
}

func (e *Engine) cniManager() *network.Manager {
	return network.NewManager(filepath.Join(e.stateDir, "cni", "cache"), nil)
}

func (e *Engine) netnsDir() string { return filepath.Join(e.stateDir, "netns") }

// netFilesDir holds the files a workload sees as /etc/hosts,
// /etc/resolv.conf and /etc/hostname, and nothing else, so that a microVM
// can get all of them by sharing this one directory.
func (e *Engine) netFilesDir(id string) string { return filepath.Join(e.containerDir(id), "net") }
func (e *Engine) netnsPath(id string) string   { return filepath.Join(e.netnsDir(), id) }

// normalizeNetworkConfig checks a new workload's network request and puts
// it in its recorded form: NetworkMode none, host or bridge, and for bridge
// the networks by name (the default one when none was named).
func (e *Engine) normalizeNetworkConfig(ctx context.Context, cfg *state.Config) error {
	for _, h := range cfg.ExtraHosts {
		name, ip, ok := strings.Cut(h, ":")
		if !ok || name == "" || (ip != "host-gateway" && net.ParseIP(ip) == nil) {
			return fmt.Errorf("invalid --add-host %q: use NAME:IP or NAME:host-gateway: %w", h, errdefs.ErrInvalidArgument)
		}
	}
	for _, d := range cfg.DNS {
		if net.ParseIP(d) == nil {
			return fmt.Errorf("invalid --dns %q: give an IP address: %w", d, errdefs.ErrInvalidArgument)
		}
	}
	for _, p := range cfg.Ports {
		if p.ContainerPort == 0 || (p.Protocol != "tcp" && p.Protocol != "udp") {
			return fmt.Errorf("invalid published port %+v: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	if cfg.NetworkMode == state.NetworkHost && cfg.Isolation == state.IsolationVM {
		return fmt.Errorf("--network host with --vm: a microVM has its own kernel and cannot share the host's network stack; "+
			"use a bridge network (the default) and publish ports with -p: %w", errdefs.ErrInvalidArgument)
	}
	switch cfg.NetworkMode {
	case state.NetworkNone, state.NetworkHost:
		if len(cfg.Networks) > 1 {
			return fmt.Errorf("--network %s cannot be combined with other networks: %w", cfg.NetworkMode, errdefs.ErrInvalidArgument)
		}
		if len(cfg.Ports) > 0 || cfg.PublishAll {
			if cfg.NetworkMode == state.NetworkNone {
				return fmt.Errorf("conflicting options: port publishing and --network none: %w", errdefs.ErrInvalidArgument)
			}
			// Like Docker: with the host's network, ports are the host's already.
			cfg.Ports, cfg.PublishAll = nil, false
		}
		cfg.Networks = nil
		return nil
	}
	if len(cfg.Networks) == 0 {
		cfg.Networks = []state.EndpointConfig{{Network: cfg.NetworkMode}}
	}
	store, err := e.netStore()
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var out []state.EndpointConfig
	for _, ep := range cfg.Networks {
		switch ep.Network {
		case "", networkBridge, "default":
			ep.Network = network.DefaultName
		case state.NetworkNone, state.NetworkHost:
			return fmt.Errorf("--network %s cannot be combined with other networks: %w", ep.Network, errdefs.ErrInvalidArgument)
		}
		n, err := store.Get(ctx, ep.Network)
		if err != nil {
			return err
		}
		if seen[n.Name] {
			continue
		}
		seen[n.Name] = true
		ep.Network = n.Name
		for _, a := range ep.Aliases {
			if !validName.MatchString(a) {
				return fmt.Errorf("invalid --network-alias %q: %w", a, errdefs.ErrInvalidArgument)
			}
		}
		out = append(out, ep)
	}
	cfg.Networks = out
	cfg.NetworkMode = networkBridge
	return nil
}

// setupNetwork gives a starting workload its network: for bridge mode a
// new namespace pinned under the state dir, loopback, and one CNI
// attachment per network (eth0, eth1…; published ports on the first). The
// result is recorded as the workload's NetworkSettings.
func (e *Engine) setupNetwork(ctx context.Context, c *state.Container) (err error) {
	cfg := c.Config
	var ns *state.NetworkSettings
	switch cfg.NetworkMode {
	case "", state.NetworkNone:
		return nil
	case state.NetworkHost:
		ns = &state.NetworkSettings{Mode: state.NetworkHost, DNS: dnsFor(cfg, false)}
	default:
		ns, err = e.attachBridge(ctx, c)
		if err != nil {
			return err
		}
	}
	if _, err := e.db.Update(ctx, c.ID, func(r *state.Container) error { r.NetworkSettings = ns; return nil }); err != nil {
		e.releaseNetwork(context.WithoutCancel(ctx), c)
		return err
	}
	c.NetworkSettings = ns
	trace("monitor: network")
	return nil
}

func (e *Engine) attachBridge(ctx context.Context, c *state.Container) (_ *state.NetworkSettings, err error) {
	cfg := c.Config
	store, err := e.netStore()
	if err != nil {
		return nil, err
	}
	mgr := e.cniManager()
	path := e.netnsPath(c.ID)
	defer func() {
		if err != nil {
			_ = mgr.DetachAll(context.WithoutCancel(ctx), c.ID, path)
			_ = network.RemoveNS(path)
		}
	}()
	ports, err := e.resolvePorts(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := network.NewNS(path); err != nil {
		return nil, fmt.Errorf("network of %s: %w", c.Name, err)
	}
	if err := mgr.Loopback(ctx, c.ID, path); err != nil {
		return nil, fmt.Errorf("network of %s: %w", c.Name, err)
	}
	ns := &state.NetworkSettings{Mode: networkBridge, NetNSPath: path, Ports: ports, DNS: dnsFor(cfg, true)}
	for i, ep := range cfg.Networks {
		n, err := store.Get(ctx, ep.Network)
		if err != nil {
			return nil, fmt.Errorf("network of %s: %w", c.Name, err)
		}
		conf, err := store.LoadConfList(n)
		if err != nil {
			return nil, err
		}
		var pm []network.PortMapping
		if i == 0 {
			pm = portMappings(ports)
		}
		a, err := mgr.Attach(ctx, conf, c.ID, path, "eth"+strconv.Itoa(i), pm)
		if err != nil {
			return nil, fmt.Errorf("network of %s: %w", c.Name, err)
		}
		ns.Networks = append(ns.Networks, endpointFrom(n, a, ep.Aliases))
	}
	return ns, nil
}

func portMappings(ports []state.PortBinding) []network.PortMapping {
	var pm []network.PortMapping
	for _, p := range ports {
		pm = append(pm, network.PortMapping{HostPort: int(p.HostPort), ContainerPort: int(p.ContainerPort), Protocol: p.Protocol, HostIP: p.HostIP})
	}
	return pm
}

func endpointFrom(n *network.Network, a *network.Attachment, aliases []string) state.Endpoint {
	ep := state.Endpoint{Network: n.Name, NetworkID: n.ID, Interface: a.Interface, MAC: a.MAC, Aliases: aliases}
	if a.IP != nil {
		ep.IPAddress = a.IP.String()
	}
	if a.Gateway != nil {
		ep.Gateway = a.Gateway.String()
	}
	for _, r := range a.Routes {
		rt := state.Route{Dst: r.Dst.String()}
		if r.GW != nil {
			rt.GW = r.GW.String()
		}
		ep.Routes = append(ep.Routes, rt)
	}
	return ep
}

// resolvePorts turns the requested ports (and -P's exposed ports) into
// bindings with host ports: free ones where none was given. A host port
// already bound on the host or published by another workload is refused.
func (e *Engine) resolvePorts(ctx context.Context, c *state.Container) ([]state.PortBinding, error) {
	ports := slices.Clone(c.Config.Ports)
	if c.Config.PublishAll {
		var exposed []string
		for p := range c.ImageConfig.ExposedPorts {
			exposed = append(exposed, p)
		}
		sort.Strings(exposed)
		for _, p := range exposed {
			num, proto, _ := strings.Cut(p, "/")
			if proto == "" {
				proto = "tcp"
			}
			n, err := strconv.ParseUint(num, 10, 16)
			if err != nil || n == 0 {
				continue
			}
			dup := false
			for _, q := range ports {
				dup = dup || (q.ContainerPort == uint16(n) && q.Protocol == proto)
			}
			if !dup {
				ports = append(ports, state.PortBinding{ContainerPort: uint16(n), Protocol: proto})
			}
		}
	}
	if len(ports) == 0 {
		return nil, nil
	}
	taken := map[string]string{}
	if others, err := e.db.List(ctx); err == nil {
		for _, o := range others {
			if o.ID != c.ID && o.NetworkSettings != nil {
				for _, p := range o.NetworkSettings.Ports {
					taken[p.Protocol+"/"+strconv.Itoa(int(p.HostPort))] = o.Name
				}
			}
		}
	}
	for i := range ports {
		p := &ports[i]
		key := func() string { return p.Protocol + "/" + strconv.Itoa(int(p.HostPort)) }
		if p.HostPort == 0 {
			for try := 0; ; try++ {
				hp, err := network.FreePort(p.Protocol, p.HostIP)
				if err != nil {
					return nil, err
				}
				p.HostPort = hp
				if taken[key()] == "" || try == 10 {
					break
				}
			}
		} else if owner := taken[key()]; owner != "" {
			return nil, fmt.Errorf("publish port %d/%s: already published by %s: %w", p.HostPort, p.Protocol, owner, errdefs.ErrConflict)
		} else if network.PortInUse(p.Protocol, p.HostIP, p.HostPort) {
			return nil, fmt.Errorf("publish port %d/%s: the host port is already in use: %w", p.HostPort, p.Protocol, errdefs.ErrConflict)
		}
		taken[key()] = c.Name
	}
	return ports, nil
}

func dnsFor(cfg state.Config, ownNamespace bool) state.DNSConfig {
	d := network.HostDNS("/etc/resolv.conf", ownNamespace)
	if len(cfg.DNS) > 0 {
		d.Nameservers = cfg.DNS
	}
	if len(cfg.DNSSearch) > 0 {
		d.Search = cfg.DNSSearch
	}
	if len(cfg.DNSOptions) > 0 {
		d.Options = cfg.DNSOptions
	}
	return state.DNSConfig{Nameservers: d.Nameservers, Search: d.Search, Options: d.Options}
}

// releaseNetwork undoes setupNetwork from whatever is left: CNI DEL of
// every attachment libcni cached for the workload (rules, veths, leases),
// the namespace pin, and the record's NetworkSettings; the other members'
// /etc/hosts then forget it. Cheap when the workload had no network.
func (e *Engine) releaseNetwork(ctx context.Context, c *state.Container) {
	path := e.netnsPath(c.ID)
	mgr := e.cniManager()
	_, statErr := os.Lstat(path)
	if c.NetworkSettings == nil && statErr != nil && !mgr.HasAttachments(c.ID) {
		return
	}
	_ = mgr.DetachAll(ctx, c.ID, path)
	_ = network.RemoveNS(path)
	nets := endpointNetworks(c.NetworkSettings)
	if c.NetworkSettings != nil {
		_, _ = e.db.Update(ctx, c.ID, func(r *state.Container) error {
			nets = append(nets, endpointNetworks(r.NetworkSettings)...)
			r.NetworkSettings = nil
			return nil
		})
		c.NetworkSettings = nil
	}
	if len(nets) > 0 {
		_ = e.syncHosts(ctx, nets)
	}
}

func endpointNetworks(ns *state.NetworkSettings) []string {
	if ns == nil {
		return nil
	}
	var out []string
	for _, ep := range ns.Networks {
		out = append(out, ep.Network)
	}
	return out
}

// networkSpecOpts write the workload's /etc/hosts and /etc/resolv.conf for
// its network and return the spec options that join its namespace.
func (e *Engine) networkSpecOpts(ctx context.Context, c *state.Container) ([]spec.Opt, error) {
	ns := c.NetworkSettings
	if ns == nil {
		return nil, nil
	}
	dir := e.netFilesDir(c.ID)
	resolv := filepath.Join(dir, "resolv.conf")
	d := network.DNS{Nameservers: ns.DNS.Nameservers, Search: ns.DNS.Search, Options: ns.DNS.Options}
	if err := os.WriteFile(resolv, network.ResolvConf(d), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", resolv, err)
	}
	mounts := []specs.Mount{
		{Destination: "/etc/resolv.conf", Type: "bind", Source: resolv, Options: []string{"rbind", "rprivate"}},
		{Destination: "/etc/hosts", Type: "bind", Source: filepath.Join(dir, "hosts"), Options: []string{"rbind", "rprivate"}},
	}
	opts := []spec.Opt{spec.WithMounts(mounts)}
	if ns.Mode == state.NetworkHost {
		hosts, _ := os.ReadFile("/etc/hosts")
		hosts = append(hosts, network.Hosts(network.HostEntry{}, nil, extraHostEntries(c))...)
		if err := os.WriteFile(filepath.Join(dir, "hosts"), hosts, 0o644); err != nil {
			return nil, err
		}
		return append(opts, withoutNamespace(specs.NetworkNamespace)), nil
	}
	if err := e.syncHosts(ctx, endpointNetworks(ns)); err != nil {
		return nil, err
	}
	return append(opts, spec.WithNetNSPath(ns.NetNSPath)), nil
}

// withoutNamespace makes the workload share the host's namespace of that type.
func withoutNamespace(t specs.LinuxNamespaceType) spec.Opt {
	return func(_ context.Context, s *specs.Spec) error {
		if s.Linux != nil {
			s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool { return ns.Type == t })
		}
		return nil
	}
}

func hostnameOf(c *state.Container) string {
	if c.Config.Hostname != "" {
		return c.Config.Hostname
	}
	return c.ID[:12]
}

func extraHostEntries(c *state.Container) []network.HostEntry {
	var out []network.HostEntry
	for _, h := range c.Config.ExtraHosts {
		name, ip, _ := strings.Cut(h, ":")
		if ip == "host-gateway" {
			ip = ""
			if ns := c.NetworkSettings; ns != nil && len(ns.Networks) > 0 {
				ip = ns.Networks[0].Gateway
			}
			if ip == "" {
				continue
			}
		}
		out = append(out, network.HostEntry{IP: ip, Names: []string{name}})
	}
	return out
}

// syncHosts rewrites /etc/hosts of every workload attached to one of nets,
// so members find each other by name, alias and short ID (Docker's
// embedded DNS, as a file). Files are rewritten in place: the workloads
// bind-mount them. A lock keeps two rewrites from interleaving.
func (e *Engine) syncHosts(ctx context.Context, nets []string) error {
	lf, err := os.OpenFile(filepath.Join(e.stateDir, "hosts.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	all, err := e.db.List(ctx)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, n := range nets {
		want[n] = true
	}
	var errs []error
	for _, c := range all {
		ns := c.NetworkSettings
		if ns == nil || ns.Mode != networkBridge || !slices.ContainsFunc(ns.Networks, func(ep state.Endpoint) bool { return want[ep.Network] }) {
			continue
		}
		if _, err := os.Stat(e.netFilesDir(c.ID)); err != nil {
			continue // removed, or not started since berth kept these files elsewhere
		}
		errs = append(errs, writeInPlace(filepath.Join(e.netFilesDir(c.ID), "hosts"), hostsFor(c, all)))
	}
	return errors.Join(errs...)
}

// hostsFor renders c's /etc/hosts from every record.
func hostsFor(c *state.Container, all []*state.Container) []byte {
	self := network.HostEntry{IP: "127.0.1.1", Names: []string{hostnameOf(c)}}
	mine := map[string]bool{}
	for i, ep := range c.NetworkSettings.Networks {
		if i == 0 {
			self.IP = ipOf(ep.IPAddress)
			self.Names = append([]string{hostnameOf(c), c.Name}, ep.Aliases...)
		}
		mine[ep.Network] = true
	}
	var peers []network.HostEntry
	for _, o := range all {
		if o.ID == c.ID || o.NetworkSettings == nil || o.NetworkSettings.Mode != networkBridge {
			continue
		}
		for _, ep := range o.NetworkSettings.Networks {
			if mine[ep.Network] {
				names := append([]string{o.Name}, ep.Aliases...)
				peers = append(peers, network.HostEntry{IP: ipOf(ep.IPAddress), Names: append(names, o.ID[:12])})
			}
		}
	}
	sort.SliceStable(peers, func(i, j int) bool { return peers[i].Names[0] < peers[j].Names[0] })
	return network.Hosts(self, peers, extraHostEntries(c))
}

func ipOf(cidr string) string {
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil {
		return cidr
	}
	return ip.String()
}

func writeInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pruneNetworkLeftovers releases what workloads without a live record
// left: CNI attachments (DEL from libcni's cache), namespace pins and
// host-local leases. live holds the IDs of running workloads.
func (e *Engine) pruneNetworkLeftovers(ctx context.Context, live map[string]bool) []string {
	var removed []string
	mgr := e.cniManager()
	for _, id := range mgr.CachedContainers() {
		if !live[id] {
			if mgr.DetachAll(ctx, id, e.netnsPath(id)) == nil {
				removed = append(removed, "attachments of "+id)
			}
		}
	}
	ents, _ := os.ReadDir(e.netnsDir())
	for _, ent := range ents {
		if !live[ent.Name()] {
			if network.RemoveNS(filepath.Join(e.netnsDir(), ent.Name())) == nil {
				removed = append(removed, "netns "+ent.Name())
			}
		}
	}
	if store, err := e.netStore(); err == nil {
		for _, l := range network.ReleaseLeases(store.DataDir(), func(id string) bool { return live[id] }) {
			removed = append(removed, "lease "+l)
		}
	}
	return removed
}

// attachmentSpecOpts are buildSpec's options for a workload's volumes and
// network.
func (e *Engine) attachmentSpecOpts(ctx context.Context, c *state.Container, rootfs string) ([]spec.Opt, error) {
	vo, err := e.volumeSpecOpts(ctx, c, rootfs)
	if err != nil {
		return nil, err
	}
	no, err := e.networkSpecOpts(ctx, c)
	if err != nil {
		return nil, err
	}
	return append(vo, no...), nil
}
