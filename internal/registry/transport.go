package registry

import (
	"crypto/tls"
	"net/http"

	"github.com/berthdev/berth/internal/errdefs"
)

// guardTransport sends requests for insecure registries through a transport
// that skips TLS verification and refuses plain HTTP to every other host, so
// ggcr's HTTP fallback (which it also tries for private addresses) cannot
// downgrade a registry that was not named insecure.
type guardTransport struct {
	secure, insecure http.RoundTripper
	o                *options
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
	return &guardTransport{secure: base, insecure: insecure, o: o}
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
	return g.secure.RoundTrip(req)
}
