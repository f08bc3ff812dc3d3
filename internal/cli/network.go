package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/berthdev/berth/internal/engine"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// netVolFlags are run/create's network and volume flags.
type netVolFlags struct {
	networks, aliases, publish, dns, dnsSearch, dnsOptions, addHosts []string
	volumes, mounts, tmpfs                                           []string
	publishAll                                                       bool
}

func (f *netVolFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.networks, "network", nil, "connect to a network: none, host, or a network name (default: the berth bridge)")
	fs.StringArrayVar(&f.networks, "net", nil, "short for --network")
	_ = fs.MarkHidden("net")
	fs.StringArrayVar(&f.aliases, "network-alias", nil, "extra name of the container on its networks")
	fs.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a port: [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]")
	fs.BoolVarP(&f.publishAll, "publish-all", "P", false, "publish every exposed port to a free host port")
	fs.StringArrayVar(&f.dns, "dns", nil, "DNS server")
	fs.StringArrayVar(&f.dnsSearch, "dns-search", nil, "DNS search domain")
	fs.StringArrayVar(&f.dnsOptions, "dns-option", nil, "DNS resolver option")
	fs.StringArrayVar(&f.addHosts, "add-host", nil, "add a host-to-IP mapping (NAME:IP, or NAME:host-gateway)")
	fs.StringArrayVarP(&f.volumes, "volume", "v", nil, "mount a volume: [NAME:|/HOST/PATH:]/PATH[:ro|rw|nocopy]")
	fs.StringArrayVar(&f.mounts, "mount", nil, "mount: type=bind|volume|tmpfs,source=…,target=…[,readonly]")
	fs.StringArrayVar(&f.tmpfs, "tmpfs", nil, "mount a tmpfs: /PATH[:OPTIONS]")
}

// apply adds the flags to cfg.
func (f *netVolFlags) apply(cfg *engine.ContainerConfig) error {
	if len(f.networks) > 0 {
		cfg.NetworkMode = f.networks[0]
		if m := cfg.NetworkMode; m != engine.NetworkNone && m != engine.NetworkHost {
			for _, n := range f.networks {
				cfg.Networks = append(cfg.Networks, engine.EndpointConfig{Network: n, Aliases: f.aliases})
			}
		} else if len(f.networks) > 1 {
			return fmt.Errorf("--network %s cannot be combined with other networks: %w", m, errdefs.ErrInvalidArgument)
		}
	} else if len(f.aliases) > 0 {
		cfg.Networks = []engine.EndpointConfig{{Network: engine.NetworkDefault, Aliases: f.aliases}}
	}
	for _, p := range f.publish {
		ports, err := parsePublish(p)
		if err != nil {
			return err
		}
		cfg.Ports = append(cfg.Ports, ports...)
	}
	cfg.PublishAll = f.publishAll
	cfg.DNS, cfg.DNSSearch, cfg.DNSOptions, cfg.ExtraHosts = f.dns, f.dnsSearch, f.dnsOptions, f.addHosts
	for _, v := range f.volumes {
		m, err := parseVolume(v)
		if err != nil {
			return err
		}
		cfg.Mounts = append(cfg.Mounts, m)
	}
	for _, v := range f.mounts {
		m, err := parseMount(v)
		if err != nil {
			return err
		}
		cfg.Mounts = append(cfg.Mounts, m)
	}
	for _, v := range f.tmpfs {
		m, err := parseTmpfs(v)
		if err != nil {
			return err
		}
		cfg.Mounts = append(cfg.Mounts, m)
	}
	return nil
}

// parsePublish parses -p [HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO]; ports
// may be ranges of equal length (8000-8001:80-81). An IPv6 host address is
// written in brackets.
func parsePublish(s string) ([]engine.PortBinding, error) {
	bad := func(why string) error {
		return fmt.Errorf("invalid -p %q: %s: use [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]: %w", s, why, errdefs.ErrInvalidArgument)
	}
	rest, proto, _ := strings.Cut(s, "/")
	proto = strings.ToLower(proto)
	switch proto {
	case "":
		proto = "tcp"
	case "tcp", "udp":
	default:
		return nil, bad("protocol must be tcp or udp")
	}
	var hostIP string
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]:")
		if end < 0 {
			return nil, bad("unclosed [")
		}
		hostIP, rest = rest[1:end], rest[end+2:]
		if net.ParseIP(hostIP) == nil {
			return nil, bad("bad host address")
		}
	}
	parts := strings.Split(rest, ":")
	var hostPart, ctrPart string
	switch len(parts) {
	case 1:
		ctrPart = parts[0]
	case 2:
		hostPart, ctrPart = parts[0], parts[1]
	case 3:
		if hostIP != "" {
			return nil, bad("too many fields")
		}
		hostIP, hostPart, ctrPart = parts[0], parts[1], parts[2]
		if net.ParseIP(hostIP) == nil || net.ParseIP(hostIP).To4() == nil {
			return nil, bad("bad host address")
		}
	default:
		return nil, bad("too many fields")
	}
	clo, chi, err := portRange(ctrPart)
	if err != nil || clo == 0 {
		return nil, bad("bad container port")
	}
	var hlo, hhi uint16
	if hostPart != "" {
		if hlo, hhi, err = portRange(hostPart); err != nil || hlo == 0 {
			return nil, bad("bad host port")
		}
		if hhi-hlo != chi-clo {
			return nil, bad("host and container port ranges differ in length")
		}
	}
	var out []engine.PortBinding
	for i := 0; i <= int(chi-clo); i++ {
		b := engine.PortBinding{HostIP: hostIP, ContainerPort: clo + uint16(i), Protocol: proto}
		if hlo != 0 {
			b.HostPort = hlo + uint16(i)
		}
		out = append(out, b)
	}
	return out, nil
}

func portRange(s string) (lo, hi uint16, err error) {
	a, b, isRange := strings.Cut(s, "-")
	l, err := strconv.ParseUint(a, 10, 16)
	if err != nil {
		return 0, 0, err
	}
	h := l
	if isRange {
		if h, err = strconv.ParseUint(b, 10, 16); err != nil {
			return 0, 0, err
		}
		if h < l {
			return 0, 0, fmt.Errorf("range %s is backwards", s)
		}
	}
	return uint16(l), uint16(h), nil
}

// formatPorts renders ports as Docker's PORTS column does.
func formatPorts(ports []engine.PortBinding) string {
	var out []string
	for _, p := range ports {
		ip := p.HostIP
		if ip == "" {
			ip = "0.0.0.0"
		}
		if p.HostPort == 0 {
			out = append(out, fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol))
			continue
		}
		out = append(out, fmt.Sprintf("%s:%d->%d/%s", ip, p.HostPort, p.ContainerPort, p.Protocol))
	}
	return strings.Join(out, ", ")
}

// containerPorts are the ports ps shows: bound ones while running.
func containerPorts(c *engine.Container) []engine.PortBinding {
	if c.NetworkSettings != nil {
		return c.NetworkSettings.Ports
	}
	return nil
}

func portCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "port CONTAINER [PRIVATE_PORT[/PROTO]]",
		Short: "List a workload's published ports",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			ports, err := e.Port(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			found := false
			for _, p := range ports {
				key := fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol)
				if len(args) == 2 && args[1] != key && args[1] != strconv.Itoa(int(p.ContainerPort)) {
					continue
				}
				found = true
				ip := p.HostIP
				if ip == "" {
					ip = "0.0.0.0"
				}
				if len(args) == 2 {
					fmt.Printf("%s\n", net.JoinHostPort(ip, strconv.Itoa(int(p.HostPort))))
				} else {
					fmt.Printf("%s -> %s\n", key, net.JoinHostPort(ip, strconv.Itoa(int(p.HostPort))))
				}
			}
			if len(args) == 2 && !found {
				return fmt.Errorf("no public port %s published for %s: %w", args[1], args[0], errdefs.ErrNotFound)
			}
			return nil
		},
	}
}

func networkCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Manage networks"}
	var o engine.NetworkCreateOptions
	var labels []string
	create := &cobra.Command{
		Use:   "create [--subnet CIDR] [--gateway IP] [--internal] NAME",
		Short: "Create a bridge network",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			o.Labels = parseLabels(labels)
			n, err := e.NetworkCreate(cmd.Context(), args[0], o)
			if err != nil {
				return err
			}
			fmt.Println(n.ID)
			return nil
		},
	}
	create.Flags().StringVar(&o.Subnet, "subnet", "", "IPv4 subnet in CIDR form (default: a free 10.89.N.0/24)")
	create.Flags().StringVar(&o.Gateway, "gateway", "", "gateway address (default: the subnet's first)")
	create.Flags().BoolVar(&o.Internal, "internal", false, "no route out of the network and no NAT")
	create.Flags().StringArrayVar(&labels, "label", nil, "set metadata (K=V)")
	create.Flags().StringP("driver", "d", "bridge", "driver (only bridge)")

	var quiet bool
	var format string
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List networks",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			ns, err := e.NetworkList(cmd.Context())
			if err != nil {
				return err
			}
			type row struct{ ID, Name, Driver, Subnet, Gateway, Internal string }
			var rows []row
			for _, n := range ns {
				rows = append(rows, row{n.ID[:12], n.Name, n.Driver, n.Subnet, n.Gateway, strconv.FormatBool(n.Internal)})
			}
			switch {
			case quiet:
				for _, r := range rows {
					fmt.Println(r.ID)
				}
				return nil
			case format == "json":
				return json.NewEncoder(os.Stdout).Encode(ns)
			case format != "":
				return printTemplate(format, rows)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "NETWORK ID\tNAME\tDRIVER\tSUBNET\tGATEWAY\tINTERNAL")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, r.Driver, r.Subnet, r.Gateway, r.Internal)
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display IDs")
	ls.Flags().StringVar(&format, "format", "", "Go template or json")

	inspect := inspectVerb(g, "inspect NETWORK...", "Show a network's definition and members", func(ctx context.Context, e *engine.Engine, name string) (any, error) {
		return e.NetworkInspect(ctx, name)
	})

	rm := &cobra.Command{
		Use:     "rm NETWORK...",
		Aliases: []string{"remove"},
		Short:   "Remove networks",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			return forEach(args, func(n string) error { return e.NetworkRemove(cmd.Context(), n) })
		},
	}
	var aliases []string
	connect := &cobra.Command{
		Use:   "connect [--alias A] NETWORK CONTAINER",
		Short: "Connect a workload to a network",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			return e.NetworkConnect(cmd.Context(), args[0], args[1], aliases)
		},
	}
	connect.Flags().StringArrayVar(&aliases, "alias", nil, "extra name on this network")
	disconnect := &cobra.Command{
		Use:   "disconnect NETWORK CONTAINER",
		Short: "Disconnect a workload from a network",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			return e.NetworkDisconnect(cmd.Context(), args[0], args[1])
		},
	}
	disconnect.Flags().BoolP("force", "f", false, "accepted for Docker compatibility")
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Remove networks no workload uses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.engine(cmd.Context())
			if err != nil {
				return err
			}
			removed, err := e.NetworkPrune(cmd.Context())
			sort.Strings(removed)
			for _, n := range removed {
				fmt.Println(n)
			}
			return err
		},
	}
	prune.Flags().BoolP("force", "f", false, "do not prompt (berth never prompts)")
	cmd.AddCommand(create, ls, inspect, rm, connect, disconnect, prune)
	return cmd
}

func parseLabels(kvs []string) map[string]string {
	if len(kvs) == 0 {
		return nil
	}
	m := map[string]string{}
	for _, l := range kvs {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}
