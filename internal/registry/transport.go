package registry

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/berthdev/berth/internal/errdefs"
)

// DefaultCertsDirs are where per-registry certificates are looked up by
// default: <dir>/<host[:port]>/*.crt are extra CAs, and a *.cert with a
// matching *.key is a client certificate, as Docker and Podman do.
var DefaultCertsDirs = []string{"/etc/docker/certs.d", "/etc/containers/certs.d"}

// guardTransport sends requests for insecure registries through a transport
// that skips TLS verification and refuses plain HTTP to every other host, so
// ggcr's HTTP fallback (which it also tries for private addresses) cannot
// downgrade a registry that was not named insecure.
type guardTransport struct {
	secure, insecure http.RoundTripper
	o                *options

	mu      sync.Mutex
	perHost map[string]http.RoundTripper // hosts with a certs.d directory
}

func (o *options) transport() http.RoundTripper {
	base := o.baseTransport
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	insecure := base
	if t, ok := base.(*http.Transport); ok {
		t = t.Clone()
		if t.TLSClientConfig == nil {
			t.TLSClientConfig = &tls.Config{}
		}
		t.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // only for registries named insecure
		insecure = t
	}
	return &guardTransport{secure: base, insecure: insecure, o: o, perHost: map[string]http.RoundTripper{}}
}

// RoundTrip implements http.RoundTripper.
func (g *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if g.o.isInsecure(req.URL.Host) {
		return g.insecure.RoundTrip(req)
	}
	if req.URL.Scheme == "http" {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, classed(errdefs.ErrUnavailable, nil, "refusing plain HTTP to "+req.URL.Host+" (not an insecure registry)")
	}
	rt, err := g.hostTransport(req.URL.Host)
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	return rt.RoundTrip(req)
}

// hostTransport returns the transport for host: the default one, or one
// trusting the CAs and presenting the client certificate of the host's
// certs.d directory.
func (g *guardTransport) hostTransport(host string) (http.RoundTripper, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if rt, ok := g.perHost[host]; ok {
		return rt, nil
	}
	rt := g.secure
	base, ok := g.secure.(*http.Transport)
	for _, dir := range g.o.certsDirs {
		hostDir := filepath.Join(dir, host)
		if _, err := os.Stat(hostDir); err != nil || !ok {
			continue
		}
		conf, err := certsDirTLS(hostDir, base.TLSClientConfig)
		if err != nil {
			return nil, err
		}
		t := base.Clone()
		t.TLSClientConfig = conf
		rt = t
		break
	}
	g.perHost[host] = rt
	return rt, nil
}

// certsDirTLS builds a TLS configuration from a Docker certs.d host directory.
func certsDirTLS(dir string, base *tls.Config) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		conf = base.Clone()
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read certificates in %s: %w", dir, err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case strings.HasSuffix(e.Name(), ".crt"):
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("read CA %s: %w", p, err)
			}
			if !pool.AppendCertsFromPEM(b) {
				return nil, classed(errdefs.ErrInvalidArgument, nil, "no PEM certificate in "+p)
			}
		case strings.HasSuffix(e.Name(), ".cert"):
			key := strings.TrimSuffix(p, ".cert") + ".key"
			cert, err := tls.LoadX509KeyPair(p, key)
			if err != nil {
				return nil, classed(errdefs.ErrInvalidArgument, err, "load client certificate "+p)
			}
			conf.Certificates = append(conf.Certificates, cert)
		}
	}
	conf.RootCAs = pool
	return conf, nil
}
