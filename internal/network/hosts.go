package network

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"strings"
)

// HostEntry is one line of a workload's /etc/hosts.
type HostEntry struct {
	IP    string
	Names []string
}

// Hosts renders /etc/hosts: localhost, the workload itself (self), the
// other members of its networks (peers) and --add-host entries (extra).
// A name already given to an earlier address is not repeated.
func Hosts(self HostEntry, peers, extra []HostEntry) []byte {
	var b bytes.Buffer
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	seen := map[string]bool{"localhost": true}
	write := func(e HostEntry) {
		var names []string
		for _, n := range e.Names {
			if n != "" && !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
		if len(names) > 0 {
			b.WriteString(e.IP + "\t" + strings.Join(names, " ") + "\n")
		}
	}
	// --add-host comes first: it wins over a peer of the same name.
	for _, e := range extra {
		write(e)
	}
	write(self)
	for _, e := range peers {
		write(e)
	}
	return b.Bytes()
}

// DNS is a resolver configuration.
type DNS struct {
	Nameservers, Search, Options []string
}

// ResolvConf renders /etc/resolv.conf.
func ResolvConf(d DNS) []byte {
	var b bytes.Buffer
	if len(d.Search) > 0 {
		b.WriteString("search " + strings.Join(d.Search, " ") + "\n")
	}
	for _, ns := range d.Nameservers {
		b.WriteString("nameserver " + ns + "\n")
	}
	if len(d.Options) > 0 {
		b.WriteString("options " + strings.Join(d.Options, " ") + "\n")
	}
	return b.Bytes()
}

// FallbackNameservers are used, like Docker, when the host's resolvers are
// all loopback addresses a workload in its own namespace cannot reach.
var FallbackNameservers = []string{"8.8.8.8", "8.8.4.4"}

// HostDNS reads a resolv.conf (the host's) and keeps what a workload in its
// own network namespace can use: loopback nameservers are dropped and, if
// none is left, the fallbacks are used.
func HostDNS(path string, ownNamespace bool) DNS {
	var d DNS
	data, _ := os.ReadFile(path)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			if ip := net.ParseIP(f[1]); ip != nil && (!ownNamespace || !ip.IsLoopback()) {
				d.Nameservers = append(d.Nameservers, f[1])
			}
		case "search", "domain":
			d.Search = f[1:]
		case "options":
			d.Options = append(d.Options, f[1:]...)
		}
	}
	if len(d.Nameservers) == 0 && ownNamespace {
		d.Nameservers = FallbackNameservers
	}
	return d
}
