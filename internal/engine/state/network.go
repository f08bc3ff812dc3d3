package state

// Network modes a workload can ask for (Config.NetworkMode). Anything else
// names a berth network.
const (
	NetworkNone    = "none"
	NetworkHost    = "host"
	NetworkDefault = "berth"
)

// EndpointConfig asks for a workload's membership of one network.
type EndpointConfig struct {
	Network string   `json:"network"`
	Aliases []string `json:"aliases,omitempty"`
}

// PortBinding publishes a workload's port on the host. HostPort 0 asks for
// a free port, chosen when the workload starts.
type PortBinding struct {
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      uint16 `json:"hostPort"`
	ContainerPort uint16 `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

// NetworkSettings are what a running workload's network set-up produced:
// everything a backend needs to configure a guest (a microVM configures its
// interface from the addresses, routes and DNS here instead of letting the
// kernel in the namespace keep them). Nil when the workload holds none.
type NetworkSettings struct {
	// Mode is "none", "host" or "bridge" (one or more berth networks).
	Mode string `json:"mode"`
	// NetNSPath is the network namespace (a bind-mounted nsfs file) the
	// workload joins; empty for host and none.
	NetNSPath string `json:"netnsPath,omitempty"`
	// Networks are the workload's endpoints, in attachment order.
	Networks []Endpoint `json:"networks,omitempty"`
	// Ports are the published ports with the host ports actually bound.
	Ports []PortBinding `json:"ports,omitempty"`
	// DNS is what /etc/resolv.conf in the workload says.
	DNS DNSConfig `json:"dns"`
}

// Endpoint is one interface of a workload on one network.
type Endpoint struct {
	Network   string   `json:"network"`
	NetworkID string   `json:"networkID"`
	Interface string   `json:"interface"`
	MAC       string   `json:"mac,omitempty"`
	IPAddress string   `json:"ipAddress"` // CIDR, e.g. 10.88.0.5/16
	Gateway   string   `json:"gateway,omitempty"`
	Routes    []Route  `json:"routes,omitempty"`
	Aliases   []string `json:"aliases,omitempty"`
}

// Route is one route in the workload's namespace.
type Route struct {
	Dst string `json:"dst"`
	GW  string `json:"gw,omitempty"`
}

// DNSConfig is a workload's resolver configuration.
type DNSConfig struct {
	Nameservers []string `json:"nameservers,omitempty"`
	Search      []string `json:"search,omitempty"`
	Options     []string `json:"options,omitempty"`
}
