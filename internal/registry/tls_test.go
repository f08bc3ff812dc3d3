package registry_test

import (
	"context"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/registry"
)

// dialTo returns a transport that connects every request to addr, so a
// test server can stand in for a non-loopback registry name.
func dialTo(addr string) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return tr
}

func TestTLSVerification(t *testing.T) {
	ctx := t.Context()
	tlsSrv := httptest.NewTLSServer(quietGGCR()) // self-signed certificate
	t.Cleanup(tlsSrv.Close)
	plainSrv := httptest.NewServer(quietGGCR())
	t.Cleanup(plainSrv.Close)
	tlsAddr := strings.TrimPrefix(tlsSrv.URL, "https://")
	plainAddr := strings.TrimPrefix(plainSrv.URL, "http://")
	img := randomImage(t, 1)
	const ref = "registry.test/team/app:1"

	for _, tc := range []struct {
		name  string
		addr  string
		opts  []registry.Option
		class error
		msg   string
	}{
		{"self-signed refused", tlsAddr, nil, errdefs.ErrUnavailable, "TLS verification failed"},
		{"insecure registry", tlsAddr, []registry.Option{registry.WithInsecureRegistries("registry.test")}, nil, ""},
		{"insecure CIDR does not match a name", tlsAddr, []registry.Option{registry.WithInsecureRegistries("10.0.0.0/8")}, errdefs.ErrUnavailable, "TLS"},
		{"tls-verify=false", tlsAddr, []registry.Option{registry.WithTLSVerify(false)}, nil, ""},
		{"plain HTTP refused", plainAddr, nil, errdefs.ErrUnavailable, "plain HTTP"},
		{"plain HTTP when insecure", plainAddr, []registry.Option{registry.WithInsecureRegistries("registry.test:443", "registry.test")}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := append([]registry.Option{registry.WithTransport(dialTo(tc.addr))}, tc.opts...)
			_, err := registry.Push(ctx, ref, img, opts...)
			if tc.class == nil {
				if err != nil {
					t.Fatalf("push: %v", err)
				}
				if _, err := registry.Pull(ctx, ref, newLayoutStore(t), opts...); err != nil {
					t.Fatalf("pull: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("push: %v, want %v mentioning %q", err, tc.class, tc.msg)
			}
			_, err = registry.Pull(ctx, ref, newLayoutStore(t), opts...)
			if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("pull: %v, want %v mentioning %q", err, tc.class, tc.msg)
			}
			t.Logf("pull: %v", err)
		})
	}
}

func TestUnreachableRegistry(t *testing.T) {
	ctx := t.Context()
	_, err := registry.Pull(ctx, "nonexistent.invalid/x:1", newLayoutStore(t))
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "unknown host") {
		t.Fatalf("unknown host: %v", err)
	}
	t.Logf("unknown host: %v", err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = registry.Pull(ctx, addr+"/x:1", newLayoutStore(t))
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("refused: %v", err)
	}
	t.Logf("refused: %v", err)
}

func TestCertsDir(t *testing.T) {
	ctx := t.Context()
	srv := httptest.NewTLSServer(quietGGCR()) // certificate for example.com
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "https://")
	const ref = "example.com/team/app:1"
	img := randomImage(t, 1)
	opts := []registry.Option{registry.WithTransport(dialTo(addr)), registry.WithCertsDirs(t.TempDir())}
	if _, err := registry.Push(ctx, ref, img, opts...); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("push without the CA: %v", err)
	}
	certs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(certs, "example.com"), 0o755); err != nil {
		t.Fatal(err)
	}
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(certs, "example.com", "ca.crt"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	opts = []registry.Option{registry.WithTransport(dialTo(addr)), registry.WithCertsDirs(certs)}
	if _, err := registry.Push(ctx, ref, img, opts...); err != nil {
		t.Fatalf("push trusting the CA from certs.d: %v", err)
	}
	if _, err := registry.Pull(ctx, ref, newLayoutStore(t), opts...); err != nil {
		t.Fatalf("pull trusting the CA from certs.d: %v", err)
	}
}
