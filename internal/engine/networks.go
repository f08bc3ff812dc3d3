package engine

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/berthdev/berth/internal/engine/state"
	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/network"
)

// NetworkCreate defines a new network (its bridge appears with the first
// workload attached).
func (e *Engine) NetworkCreate(ctx context.Context, name string, opts NetworkCreateOptions) (*Network, error) {
	store, err := e.netStore()
	if err != nil {
		return nil, err
	}
	if name == network.DefaultName {
		return nil, fmt.Errorf("network %s: %w", name, errdefs.ErrAlreadyExists)
	}
	return store.Create(ctx, name, opts)
}

// NetworkList returns every network, the default one included.
func (e *Engine) NetworkList(ctx context.Context) ([]*Network, error) {
	store, err := e.netStore()
	if err != nil {
		return nil, err
	}
	if _, err := store.EnsureDefault(ctx); err != nil {
		return nil, err
	}
	return store.List(ctx)
}

// NetworkInfo is `berth network inspect`'s view: the definition and the
// workloads attached now.
type NetworkInfo struct {
	*Network
	Containers map[string]NetworkMember `json:"containers"`
}

// NetworkMember is one attached workload.
type NetworkMember struct {
	Name      string   `json:"name"`
	IPAddress string   `json:"ipAddress"`
	MAC       string   `json:"mac,omitempty"`
	Aliases   []string `json:"aliases,omitempty"`
}

// NetworkInspect describes a network and its members.
func (e *Engine) NetworkInspect(ctx context.Context, ref string) (*NetworkInfo, error) {
	store, err := e.netStore()
	if err != nil {
		return nil, err
	}
	n, err := store.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	info := &NetworkInfo{Network: n, Containers: map[string]NetworkMember{}}
	cs, err := e.List(ctx, false)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		if c.NetworkSettings == nil {
			continue
		}
		for _, ep := range c.NetworkSettings.Networks {
			if ep.Network == n.Name {
				info.Containers[c.ID] = NetworkMember{Name: c.Name, IPAddress: ep.IPAddress, MAC: ep.MAC, Aliases: ep.Aliases}
			}
		}
	}
	return info, nil
}

// networkUsers names the workloads (any state) configured on network name.
func (e *Engine) networkUsers(ctx context.Context, name string) ([]string, error) {
	cs, err := e.db.List(ctx)
	if err != nil {
		return nil, err
	}
	var users []string
	for _, c := range cs {
		if slices.ContainsFunc(c.Config.Networks, func(ep state.EndpointConfig) bool { return ep.Network == name }) {
			users = append(users, c.Name)
		}
	}
	return users, nil
}

// NetworkRemove deletes a network no workload is configured to use, with
// its bridge and leases. The default network stays.
func (e *Engine) NetworkRemove(ctx context.Context, ref string) error {
	store, err := e.netStore()
	if err != nil {
		return err
	}
	n, err := store.Get(ctx, ref)
	if err != nil {
		return err
	}
	if n.Name == network.DefaultName {
		return fmt.Errorf("the default network %s cannot be removed: %w", n.Name, errdefs.ErrConflict)
	}
	users, err := e.networkUsers(ctx, n.Name)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return fmt.Errorf("network %s is in use by %v: remove them or disconnect them first: %w", n.Name, users, errdefs.ErrConflict)
	}
	return store.Remove(ctx, n)
}

// NetworkPrune removes every user network no workload uses.
func (e *Engine) NetworkPrune(ctx context.Context) ([]string, error) {
	store, err := e.netStore()
	if err != nil {
		return nil, err
	}
	all, err := store.List(ctx)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, n := range all {
		if n.Name == network.DefaultName {
			continue
		}
		if users, err := e.networkUsers(ctx, n.Name); err != nil || len(users) > 0 {
			continue
		}
		if err := store.Remove(ctx, n); err != nil {
			return removed, err
		}
		removed = append(removed, n.Name)
	}
	return removed, nil
}

// NetworkConnect adds a workload to a network; a running one is attached
// at once (a new interface), a stopped one when it next starts.
func (e *Engine) NetworkConnect(ctx context.Context, netRef, ref string, aliases []string) error {
	store, err := e.netStore()
	if err != nil {
		return err
	}
	n, err := store.Get(ctx, netRef)
	if err != nil {
		return err
	}
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return err
	}
	if m := c.Config.NetworkMode; m == state.NetworkNone || m == state.NetworkHost || m == "" {
		return fmt.Errorf("container %s uses --network %s: it cannot join a network: %w", c.Name, orNone(m), errdefs.ErrConflict)
	}
	for _, a := range aliases {
		if !validName.MatchString(a) {
			return fmt.Errorf("invalid alias %q: %w", a, errdefs.ErrInvalidArgument)
		}
	}
	if err := vmNICsFixed(c, "connect", n.Name); err != nil {
		return err
	}
	if slices.ContainsFunc(c.Config.Networks, func(ep state.EndpointConfig) bool { return ep.Network == n.Name }) {
		return fmt.Errorf("container %s is already on network %s: %w", c.Name, n.Name, errdefs.ErrAlreadyExists)
	}
	var ep *state.Endpoint
	if c.State.Status == state.StatusRunning && c.NetworkSettings != nil && c.NetworkSettings.NetNSPath != "" {
		conf, err := store.LoadConfList(n)
		if err != nil {
			return err
		}
		ifName := nextInterface(c.NetworkSettings)
		a, err := e.cniManager().Attach(ctx, conf, c.ID, c.NetworkSettings.NetNSPath, ifName, nil)
		if err != nil {
			return err
		}
		v := endpointFrom(n, a, aliases)
		ep = &v
	}
	_, err = e.db.Update(ctx, c.ID, func(r *state.Container) error {
		r.Config.Networks = append(r.Config.Networks, state.EndpointConfig{Network: n.Name, Aliases: aliases})
		if ep != nil && r.NetworkSettings != nil {
			r.NetworkSettings.Networks = append(r.NetworkSettings.Networks, *ep)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if ep != nil {
		return e.syncHosts(ctx, append(endpointNetworks(c.NetworkSettings), n.Name))
	}
	return nil
}

// vmNICsFixed refuses to change the networks of a running microVM: its NICs
// are set at boot (QEMU's microvm machine has no hot-plug). A stopped one
// gets the change when it next starts.
func vmNICsFixed(c *state.Container, op, network string) error {
	if c.Config.Isolation != state.IsolationVM || c.State.Status != state.StatusRunning {
		return nil
	}
	return fmt.Errorf("network %s %s %s: it is a running microVM, whose network interfaces are fixed at boot; stop it first: %w",
		op, network, c.Name, errdefs.ErrConflict)
}

func orNone(m string) string {
	if m == "" {
		return state.NetworkNone
	}
	return m
}

func nextInterface(ns *state.NetworkSettings) string {
	for i := 0; ; i++ {
		name := "eth" + strconv.Itoa(i)
		if !slices.ContainsFunc(ns.Networks, func(ep state.Endpoint) bool { return ep.Interface == name }) {
			return name
		}
	}
}

// NetworkDisconnect removes a workload from a network (detaching a running
// one's interface).
func (e *Engine) NetworkDisconnect(ctx context.Context, netRef, ref string) error {
	store, err := e.netStore()
	if err != nil {
		return err
	}
	n, err := store.Get(ctx, netRef)
	if err != nil {
		return err
	}
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(c.Config.Networks, func(ep state.EndpointConfig) bool { return ep.Network == n.Name }) {
		return fmt.Errorf("container %s is not on network %s: %w", c.Name, n.Name, errdefs.ErrNotFound)
	}
	if err := vmNICsFixed(c, "disconnect", n.Name); err != nil {
		return err
	}
	if ns := c.NetworkSettings; ns != nil {
		for _, ep := range ns.Networks {
			if ep.Network == n.Name {
				if err := e.cniManager().Detach(ctx, c.ID, n.Name, ep.Interface, ns.NetNSPath); err != nil {
					return err
				}
			}
		}
	}
	_, err = e.db.Update(ctx, c.ID, func(r *state.Container) error {
		r.Config.Networks = slices.DeleteFunc(r.Config.Networks, func(ep state.EndpointConfig) bool { return ep.Network == n.Name })
		if r.NetworkSettings != nil {
			r.NetworkSettings.Networks = slices.DeleteFunc(r.NetworkSettings.Networks, func(ep state.Endpoint) bool { return ep.Network == n.Name })
		}
		return nil
	})
	if err != nil {
		return err
	}
	return e.syncHosts(ctx, append(endpointNetworks(c.NetworkSettings), n.Name))
}

// Port lists a workload's published ports: the bound ones while it runs,
// else what was asked for.
func (e *Engine) Port(ctx context.Context, ref string) ([]PortBinding, error) {
	c, err := e.Inspect(ctx, ref)
	if err != nil {
		return nil, err
	}
	if c.NetworkSettings != nil {
		return c.NetworkSettings.Ports, nil
	}
	return c.Config.Ports, nil
}
