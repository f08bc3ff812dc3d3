package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/sirupsen/logrus"

	// Register the htpasswd access controller and the filesystem driver.
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"

	"github.com/berthdev/berth/internal/errdefs"
)

// realm is the basic-authentication realm the server announces.
const realm = "berth-registry"

// Config describes a registry server. Root is required.
type Config struct {
	// Addr is the TCP address to listen on. Default "127.0.0.1:5000"; a port
	// of 0 picks a free one (see Server.Addr).
	Addr string
	// Root is the directory holding the registry's data; it is created if missing.
	Root string
	// Htpasswd is an htpasswd file of bcrypt entries (htpasswd -B). When set,
	// every request needs HTTP basic authentication. Default: open access.
	Htpasswd string
	// TLSCert and TLSKey are PEM files; when both are set the server speaks
	// HTTPS only. Default: plain HTTP.
	TLSCert, TLSKey string
	// ReadOnly refuses pushes and deletes (for example while GC runs).
	ReadOnly bool
	// NoDelete refuses manifest and blob deletion. Default: deletion enabled,
	// as the OCI content-management tests and GC of deleted images need it.
	NoDelete bool
	// Log receives one line per request and the registry's warnings. Default:
	// discarded. The distribution library logs through logrus's global logger,
	// so this setting applies process-wide.
	Log io.Writer
	// LogLevel is the registry library's level ("error", "warn", "info",
	// "debug"). Default "warn".
	LogLevel string
}

// Server is a running-to-be registry. Create it with New, then call Serve.
type Server struct {
	cfg     Config
	app     *handlers.App
	handler http.Handler
	ln      net.Listener
	tls     bool
}

// New validates cfg, prepares the storage directory, builds the registry
// and binds the listener, so Addr is known before Serve.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Root == "" {
		return nil, fmt.Errorf("new registry server: root directory: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:5000"
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, fmt.Errorf("new registry server: TLS needs both a certificate and a key: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Htpasswd != "" {
		// distribution would otherwise create the file with a random user.
		if _, err := os.Stat(cfg.Htpasswd); err != nil {
			return nil, fmt.Errorf("new registry server: htpasswd file: %w: %v", errdefs.ErrInvalidArgument, err)
		}
	}
	if err := os.MkdirAll(cfg.Root, 0o755); err != nil {
		return nil, fmt.Errorf("new registry server: create root %s: %w", cfg.Root, err)
	}
	configureLogging(cfg)

	dc, err := distributionConfig(cfg)
	if err != nil {
		return nil, err
	}
	app, err := newApp(ctx, dc)
	if err != nil {
		return nil, fmt.Errorf("new registry server at %s: %w", cfg.Root, err)
	}
	s := &Server{cfg: cfg, app: app}
	oci, err := newOCI11(ctx, cfg, app)
	if err != nil {
		_ = app.Shutdown()
		return nil, fmt.Errorf("new registry server at %s: %w", cfg.Root, err)
	}
	s.handler = oci
	if cfg.Log != nil {
		s.handler = accessLog(cfg.Log, s.handler)
	}

	var tlsConf *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			_ = app.Shutdown()
			return nil, fmt.Errorf("new registry server: load TLS key pair: %w: %v", errdefs.ErrInvalidArgument, err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		_ = app.Shutdown()
		return nil, fmt.Errorf("new registry server: listen on %s: %w: %v", cfg.Addr, errdefs.ErrUnavailable, err)
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
		s.tls = true
	}
	s.ln = ln
	return s, nil
}

// newApp builds the distribution app, turning its configuration panics into errors.
func newApp(ctx context.Context, dc *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("configure registry: %v: %w", r, errdefs.ErrInvalidArgument)
		}
	}()
	return handlers.NewApp(ctx, dc), nil
}

// distributionConfig translates Config into the library's configuration.
func distributionConfig(cfg Config) (*configuration.Configuration, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generate upload secret: %w", err)
	}
	dc := &configuration.Configuration{Version: "0.1"}
	dc.Log.Level = configuration.Loglevel(logLevel(cfg))
	dc.Log.AccessLog.Disabled = true
	dc.HTTP.Addr = cfg.Addr
	dc.HTTP.Secret = hex.EncodeToString(secret)
	dc.HTTP.Headers = http.Header{"X-Content-Type-Options": []string{"nosniff"}}
	dc.Catalog.MaxEntries = 1000
	// Allow manifests to reference non-distributable layers by http(s) URL.
	dc.Validation.Manifests.URLs.Allow = []string{"^https?://"}
	dc.Storage = configuration.Storage{
		"filesystem": configuration.Parameters{"rootdirectory": cfg.Root},
		"cache":      configuration.Parameters{"blobdescriptor": "inmemory"},
		"delete":     configuration.Parameters{"enabled": !cfg.NoDelete},
		"maintenance": configuration.Parameters{
			"readonly": map[any]any{"enabled": cfg.ReadOnly},
		},
	}
	if cfg.Htpasswd != "" {
		dc.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": realm, "path": cfg.Htpasswd}}
	}
	return dc, nil
}

func logLevel(cfg Config) string {
	if cfg.LogLevel == "" {
		return "warn"
	}
	return cfg.LogLevel
}

func logWriter(cfg Config) io.Writer {
	if cfg.Log == nil {
		return io.Discard
	}
	return cfg.Log
}

// configureLogging points logrus's global logger, which the library uses, at cfg.Log.
func configureLogging(cfg Config) {
	logrus.SetOutput(logWriter(cfg))
	if lvl, err := logrus.ParseLevel(logLevel(cfg)); err == nil {
		logrus.SetLevel(lvl)
	}
}

// Addr is the address the server listens on, e.g. "127.0.0.1:40123".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the base URL of the registry, e.g. "http://127.0.0.1:40123".
func (s *Server) URL() string {
	scheme := "http"
	if s.tls {
		scheme = "https"
	}
	return scheme + "://" + s.Addr()
}

// Handler is the registry's HTTP handler, for serving it in-process (httptest).
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers requests until ctx is cancelled, then stops accepting,
// waits up to 10 seconds for requests in flight and releases the storage.
// It returns nil after a cancellation-initiated shutdown.
func (s *Server) Serve(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ErrorLog:          log.New(logWriter(s.cfg), "registry: ", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		_ = s.app.Shutdown()
		return fmt.Errorf("serve registry on %s: %w", s.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	_ = s.app.Shutdown()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("stop registry on %s: %w", s.Addr(), err)
	}
	return nil
}

// Close releases the listener and storage of a server that is not serving.
func (s *Server) Close() error {
	err := s.ln.Close()
	_ = s.app.Shutdown()
	return err
}

// accessLog writes "METHOD PATH STATUS BYTES DURATION" per request.
func accessLog(w io.Writer, next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: rw, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		user, _, _ := r.BasicAuth()
		if user == "" {
			user = "-"
		}
		fmt.Fprintf(w, "%s %s %s %s %d %d %s\n", start.UTC().Format(time.RFC3339), remoteHost(r.RemoteAddr),
			user, r.Method+" "+r.URL.RequestURI(), rec.status, rec.bytes, time.Since(start).Round(time.Microsecond))
	})
}

func remoteHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return strings.TrimSpace(addr)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush passes flushes through.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
