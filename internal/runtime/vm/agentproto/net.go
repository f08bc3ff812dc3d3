package agentproto

// Network is the guest's network configuration (Setup.Network): one
// interface per NIC the host gave the VM, and the routes of the workload's
// network namespace. The host copies all of it from the namespace, so the
// guest holds the same addresses, MACs and routes a container would.
type Network struct {
	Interfaces []Interface `json:"interfaces,omitempty"`
	// Routes are added after every interface is up, in order; routes
	// without a gateway (on-link) come before the ones that need them.
	Routes []Route `json:"routes,omitempty"`
}

// Interface is one guest NIC.
type Interface struct {
	// Name is what the agent renames the NIC to (the namespace's name,
	// eth0, eth1…).
	Name string `json:"name"`
	// MAC identifies the NIC: the host gives the virtio-net device the MAC
	// of the namespace interface it mirrors.
	MAC string `json:"mac"`
	// MTU is set when > 0.
	MTU int `json:"mtu,omitempty"`
	// Addresses in CIDR form (10.88.0.5/16).
	Addresses []string `json:"addresses,omitempty"`
}

// Route is one route of the main table.
type Route struct {
	// Dst in CIDR form: 0.0.0.0/0 (or ::/0) for a default route.
	Dst string `json:"dst,omitempty"`
	// Gateway is the next hop; empty for an on-link route.
	Gateway string `json:"gateway,omitempty"`
	// Device is the Interface.Name the route leaves through.
	Device string `json:"device"`
	// Source is the preferred source address, when the namespace set one.
	Source string `json:"source,omitempty"`
	// Metric is the route's priority (0: the kernel's default).
	Metric int `json:"metric,omitempty"`
}
