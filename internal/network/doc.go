// Package network gives workloads their networks: berth's network
// definitions (CNI conflists plus metadata under the root), network
// namespaces as bind-mounted nsfs files, attachments through libcni with the
// standard plugins (bridge, host-local, portmap, firewall, tuning, loopback),
// and the /etc/hosts and /etc/resolv.conf a workload sees. It returns
// descriptions (addresses, routes, DNS); the engine records them and a
// backend (container or microVM) applies them.
package network
