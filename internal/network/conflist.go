package network

import (
	"encoding/json"
	"fmt"
	"net"
)

// CNIVersion is the CNI spec version of the conflists berth writes (the
// newest that Debian bookworm's plugins, 1.1.x, speak).
const CNIVersion = "1.0.0"

// ConfList is the CNI configuration list for n: a bridge with host-local
// addresses (leases in dataDir), published ports through portmap (with SNAT
// so the host reaches them on 127.0.0.1), the firewall plugin (so a host
// whose FORWARD policy is DROP still forwards) and tuning. An internal
// network gets no default route and no masquerading.
func ConfList(n *Network, dataDir string) ([]byte, error) {
	_, sn, err := net.ParseCIDR(n.Subnet)
	if err != nil {
		return nil, fmt.Errorf("network %s: bad subnet %q: %w", n.Name, n.Subnet, err)
	}
	ipam := map[string]any{
		"type":    "host-local",
		"ranges":  [][]map[string]string{{{"subnet": sn.String(), "gateway": n.Gateway}}},
		"dataDir": dataDir,
	}
	if !n.Internal {
		ipam["routes"] = []map[string]string{{"dst": "0.0.0.0/0"}}
	}
	list := map[string]any{
		"cniVersion": CNIVersion,
		"name":       n.Name,
		"plugins": []map[string]any{
			{
				"type":        "bridge",
				"bridge":      n.Bridge,
				"isGateway":   true,
				"ipMasq":      !n.Internal,
				"hairpinMode": true,
				"ipam":        ipam,
			},
			{
				"type":         "portmap",
				"capabilities": map[string]bool{"portMappings": true},
				"snat":         true,
			},
			{"type": "firewall", "backend": "iptables"},
			{"type": "tuning"},
		},
	}
	return json.MarshalIndent(list, "", "  ")
}

// loopbackConf brings up lo in a new namespace.
var loopbackConf = []byte(`{"cniVersion":"` + CNIVersion + `","name":"berth-loopback","type":"loopback"}`)
