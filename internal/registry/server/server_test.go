package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/registry/server"
)

// serve starts a server for cfg and stops it when the test ends.
func serve(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv
}

func ref(t *testing.T, srv *server.Server, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(srv.Addr() + "/" + s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestServePushPull(t *testing.T) {
	srv := serve(t, server.Config{Root: t.TempDir()})
	img := randomImage(t)
	r := ref(t, srv, "a/b:1")
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	gd, _ := got.Digest()
	wd, _ := img.Digest()
	if gd != wd {
		t.Fatalf("pulled %s, pushed %s", gd, wd)
	}
	if !strings.HasPrefix(srv.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL %s", srv.URL())
	}
}

func TestNewValidates(t *testing.T) {
	ctx := t.Context()
	for _, cfg := range []server.Config{
		{},
		{Root: t.TempDir(), TLSCert: "cert.pem"},
		{Root: t.TempDir(), Htpasswd: filepath.Join(t.TempDir(), "missing")},
	} {
		if _, err := server.New(ctx, cfg); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("New(%+v) = %v, want ErrInvalidArgument", cfg, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := server.New(ctx, server.Config{Root: t.TempDir(), Addr: ln.Addr().String()}); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("address in use: %v, want ErrUnavailable", err)
	}
}

func TestHtpasswd(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := serve(t, server.Config{Root: t.TempDir(), Htpasswd: htpasswd})
	r := ref(t, srv, "a/b:1")
	img := randomImage(t)
	if err := remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: "nope"})); err == nil {
		t.Fatal("push with a wrong password succeeded")
	}
	if err := remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: "pw"})); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(srv.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("anonymous /v2/: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "berth test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	srv := serve(t, server.Config{Root: t.TempDir(), TLSCert: certFile, TLSKey: keyFile})
	if !strings.HasPrefix(srv.URL(), "https://") {
		t.Fatalf("URL %s", srv.URL())
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(srv.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ over TLS: %d", resp.StatusCode)
	}
}

func TestGC(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	srv := serve(t, server.Config{Root: root})
	keep, drop := randomImage(t), randomImage(t)
	if err := remote.Write(ref(t, srv, "gc/keep:1"), keep); err != nil {
		t.Fatal(err)
	}
	dr := ref(t, srv, "gc/drop:1")
	if err := remote.Write(dr, drop); err != nil {
		t.Fatal(err)
	}
	dd, _ := drop.Digest()
	if err := remote.Delete(dr.Context().Digest(dd.String())); err != nil {
		t.Fatal(err)
	}

	// keep: 2 layers + config + manifest; drop: the same, now unreferenced.
	res, err := server.GC(ctx, root, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsBefore != 8 || res.BlobsAfter != 8 || res.BytesFreed != 0 {
		t.Fatalf("dry run: %+v", res)
	}
	res, err = server.GC(ctx, root, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsBefore != 8 || res.BlobsAfter != 4 || res.BytesFreed <= 2048 {
		t.Fatalf("gc: %+v", res)
	}
	if _, err := remote.Image(ref(t, srv, "gc/keep:1")); err != nil {
		t.Fatalf("kept image: %v", err)
	}
	if _, err := server.GC(ctx, t.TempDir(), false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("gc of an empty dir: %v", err)
	}
}

func TestGCRefusesSHA512Content(t *testing.T) {
	root := t.TempDir()
	srv := serve(t, server.Config{Root: root})
	body := []byte("sha512 blob")
	sum := sha512.Sum512(body)
	dgst := "sha512:" + hex.EncodeToString(sum[:])
	resp, err := http.Post(srv.URL()+"/v2/x/y/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	req, _ := http.NewRequest(http.MethodPut, loc+"&digest="+dgst, bytes.NewReader(body))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != dgst {
		t.Fatalf("sha512 upload: %d %q", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	if _, err := server.GC(t.Context(), root, false); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("gc with sha512 content: %v, want ErrConflict", err)
	}
}
