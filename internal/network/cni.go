package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// DefaultPluginDirs are searched for CNI plugins, Debian's first.
var DefaultPluginDirs = []string{"/usr/lib/cni", "/usr/libexec/cni", "/opt/cni/bin"}

// PortMapping is portmap's runtimeConfig entry.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Attachment is what one CNI ADD gave a workload: its interface and how
// that interface is configured. A microVM backend configures its guest's
// interface from it.
type Attachment struct {
	Network   string
	Interface string
	MAC       string
	IP        *net.IPNet
	Gateway   net.IP
	Routes    []Route
	DNS       cnitypes.DNS
}

// Route is one route CNI set up in the namespace.
type Route struct {
	Dst *net.IPNet
	GW  net.IP
}

// Manager runs CNI plugins through libcni. Its cache (one file per
// attachment) is what lets DEL run from the container ID alone, after a
// crash, with the configuration and port mappings ADD used.
type Manager struct {
	cni      *libcni.CNIConfig
	cacheDir string
}

// NewManager uses the plugins in pluginDirs and keeps libcni's cache in cacheDir.
func NewManager(cacheDir string, pluginDirs []string) *Manager {
	if len(pluginDirs) == 0 {
		pluginDirs = DefaultPluginDirs
	}
	return &Manager{cni: libcni.NewCNIConfigWithCacheDir(pluginDirs, cacheDir, nil), cacheDir: cacheDir}
}

// Loopback brings lo up in the namespace at netns.
func (m *Manager) Loopback(ctx context.Context, containerID, netns string) error {
	conf, err := libcni.ConfFromBytes(loopbackConf)
	if err != nil {
		return err
	}
	// Not through the cache: lo goes with the namespace.
	list, err := libcni.ConfListFromConf(conf)
	if err != nil {
		return err
	}
	rt := &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: "lo"}
	if _, err := m.cni.AddNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	_ = os.Remove(filepath.Join(m.cacheDir, "results", "berth-loopback-"+containerID+"-lo"))
	return nil
}

// Attach runs CNI ADD of the conflist for the workload's interface ifName
// in netns, publishing ports (only one attachment per workload should).
func (m *Manager) Attach(ctx context.Context, conflist []byte, containerID, netns, ifName string, ports []PortMapping) (*Attachment, error) {
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		return nil, fmt.Errorf("parse CNI configuration: %w", err)
	}
	rt := &libcni.RuntimeConf{ContainerID: containerID, NetNS: netns, IfName: ifName}
	if len(ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	res, err := m.cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		// ADD may have done half its work: undo it now.
		_ = m.cni.DelNetworkList(context.WithoutCancel(ctx), list, rt)
		return nil, fmt.Errorf("attach to network %s: %w", list.Name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("attach to network %s: read CNI result: %w", list.Name, err)
	}
	return attachmentFrom(list.Name, ifName, r), nil
}

func attachmentFrom(netName, ifName string, r *types100.Result) *Attachment {
	a := &Attachment{Network: netName, Interface: ifName, DNS: r.DNS}
	for _, iface := range r.Interfaces {
		if iface.Name == ifName && iface.Sandbox != "" {
			a.MAC = iface.Mac
		}
	}
	for _, ipc := range r.IPs {
		if ipc.Address.IP.To4() == nil && a.IP != nil {
			continue
		}
		addr := ipc.Address
		a.IP = &addr
		a.Gateway = ipc.Gateway
		break
	}
	for _, rt := range r.Routes {
		if rt == nil {
			continue
		}
		dst := rt.Dst
		gw := rt.GW
		if gw == nil && dst.IP.To4() != nil && ones(dst) == 0 {
			gw = a.Gateway
		}
		a.Routes = append(a.Routes, Route{Dst: &dst, GW: gw})
	}
	return a
}

func ones(n net.IPNet) int { o, _ := n.Mask.Size(); return o }

// Detach runs CNI DEL for one attachment, from what ADD cached. netns may
// be gone (empty): plugins then release addresses and rules only.
func (m *Manager) Detach(ctx context.Context, containerID, network, ifName, netns string) error {
	atts, err := m.cni.GetCachedAttachments(containerID)
	if err != nil {
		return err
	}
	for _, a := range atts {
		if a.Network == network && a.IfName == ifName {
			return m.del(ctx, a, netns)
		}
	}
	return nil
}

// DetachAll runs CNI DEL for every attachment cached for the container.
func (m *Manager) DetachAll(ctx context.Context, containerID, netns string) error {
	atts, err := m.cni.GetCachedAttachments(containerID)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range atts {
		errs = append(errs, m.del(ctx, a, netns))
	}
	return errors.Join(errs...)
}

func (m *Manager) del(ctx context.Context, a *libcni.NetworkAttachment, netns string) error {
	list, err := libcni.ConfListFromBytes(a.Config)
	if err != nil {
		return fmt.Errorf("cached CNI configuration of %s on %s: %w", a.ContainerID, a.Network, err)
	}
	if netns != "" && !IsNS(netns) {
		netns = ""
	}
	rt := &libcni.RuntimeConf{ContainerID: a.ContainerID, NetNS: netns, IfName: a.IfName, Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs}
	if err := m.cni.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("detach %s from network %s: %w", short(a.ContainerID), a.Network, err)
	}
	return nil
}

// HasAttachments says whether anything is cached for the container.
func (m *Manager) HasAttachments(containerID string) bool {
	atts, _ := m.cni.GetCachedAttachments(containerID)
	return len(atts) > 0
}

// CachedContainers lists the containers that hold attachments.
func (m *Manager) CachedContainers() []string {
	atts, _ := m.cni.GetCachedAttachments("")
	seen := map[string]bool{}
	var out []string
	for _, a := range atts {
		if !seen[a.ContainerID] {
			seen[a.ContainerID] = true
			out = append(out, a.ContainerID)
		}
	}
	return out
}

// ReleaseLeases removes host-local leases in dataDir held by containers
// live says are gone (what a DEL that never ran leaves).
func ReleaseLeases(dataDir string, live func(id string) bool) []string {
	var released []string
	nets, _ := os.ReadDir(dataDir)
	for _, n := range nets {
		dir := filepath.Join(dataDir, n.Name())
		leases, _ := os.ReadDir(dir)
		for _, l := range leases {
			if net.ParseIP(l.Name()) == nil {
				continue // lock, last_reserved_ip.0
			}
			data, err := os.ReadFile(filepath.Join(dir, l.Name()))
			if err != nil {
				continue
			}
			id, _, _ := strings.Cut(strings.ReplaceAll(string(data), "\r", ""), "\n")
			id = strings.TrimSpace(id)
			if id != "" && !live(id) {
				if os.Remove(filepath.Join(dir, l.Name())) == nil {
					released = append(released, n.Name()+"/"+l.Name())
				}
			}
		}
	}
	return released
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
