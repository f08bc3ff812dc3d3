package registry

import (
	"fmt"
	"net"
	"strings"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/berthdev/berth/internal/errdefs"
)

// NormalizeReference returns ref in Docker's fully qualified form:
// "busybox" becomes "docker.io/library/busybox:latest" and
// "busybox@sha256:…" becomes "docker.io/library/busybox@sha256:…".
func NormalizeReference(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("parse reference %q: %w: %v", ref, errdefs.ErrInvalidArgument, err)
	}
	return named.String(), nil
}

// NormalizeHost maps the spellings of Docker Hub ("", "docker.io",
// "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/")
// to "docker.io", and strips a scheme and path from any other registry.
func NormalizeHost(host string) string {
	h := strings.TrimSpace(host)
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	h, _, _ = strings.Cut(h, "/")
	switch h {
	case "", "docker.io", "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return h
}

// parseRef normalises ref and parses it for ggcr, marking the registry
// insecure when the options allow plain HTTP for it.
func (o *options) parseRef(ref string) (display string, r name.Reference, err error) {
	display, err = NormalizeReference(ref)
	if err != nil {
		return "", nil, err
	}
	host := reference.Domain(mustNamed(display))
	var nopts []name.Option
	if o.isInsecure(host) {
		nopts = append(nopts, name.Insecure)
	}
	r, err = name.ParseReference(display, nopts...)
	if err != nil {
		return "", nil, fmt.Errorf("parse reference %q: %w: %v", ref, errdefs.ErrInvalidArgument, err)
	}
	return display, r, nil
}

func mustNamed(s string) reference.Named {
	n, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		panic(err) // s came from NormalizeReference
	}
	return n
}

// isInsecure reports whether host (host or host:port) may be reached without
// TLS verification and over plain HTTP.
func (o *options) isInsecure(host string) bool {
	if !o.tlsVerify {
		return true
	}
	hostname := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		hostname = h
	}
	hostname = strings.Trim(hostname, "[]")
	if hostname == "localhost" || strings.HasSuffix(hostname, ".localhost") {
		return true
	}
	ip := net.ParseIP(hostname)
	if ip != nil && ip.IsLoopback() {
		return true
	}
	for _, e := range o.insecure {
		if e == host || e == hostname {
			return true
		}
		if _, cidr, err := net.ParseCIDR(e); err == nil && ip != nil && cidr.Contains(ip) {
			return true
		}
	}
	return false
}
