package network

import (
	"fmt"
	"net"
	"strconv"
)

// FreePort asks the kernel for a free host port for proto ("tcp" or
// "udp") on hostIP (empty: all addresses). The port is free when asked;
// portmap's DNAT rule, not a socket, then holds it.
func FreePort(proto, hostIP string) (uint16, error) {
	addr := net.JoinHostPort(hostIP, "0")
	switch proto {
	case "udp":
		c, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return 0, fmt.Errorf("find a free udp port: %w", err)
		}
		defer c.Close()
		return uint16(c.LocalAddr().(*net.UDPAddr).Port), nil
	default:
		l, err := net.Listen("tcp4", addr)
		if err != nil {
			return 0, fmt.Errorf("find a free tcp port: %w", err)
		}
		defer l.Close()
		return uint16(l.Addr().(*net.TCPAddr).Port), nil
	}
}

// PortInUse says whether a host port is bound by a socket on this host
// (berth's own published ports are DNAT rules and do not show here).
func PortInUse(proto, hostIP string, port uint16) bool {
	addr := net.JoinHostPort(hostIP, strconv.Itoa(int(port)))
	if proto == "udp" {
		c, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return true
		}
		c.Close()
		return false
	}
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		return true
	}
	l.Close()
	return false
}
