package registry

import (
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berthdev/berth/internal/errdefs"
)

// Progress receives per-blob transfer events. *progress.Writer implements it;
// progress.Discard is the quiet sink. Methods may be called concurrently.
type Progress interface {
	// Start announces a blob of total bytes; called again when a transfer restarts.
	Start(id string, total int64)
	// Add records n more bytes transferred.
	Add(id string, n int64)
	// Done marks the blob finished with a short status ("Pull complete", "Already exists").
	Done(id, status string)
}

// Option configures Pull, Push, Login and Logout.
type Option func(*options) error

type options struct {
	platform      *v1.Platform
	platformSet   bool
	allTags       bool
	tlsVerify     bool
	insecure      []string
	keychain      authn.Keychain
	authFile      string
	progress      Progress
	jobs          int
	retries       int
	stagingDir    string
	mountFrom     string
	userAgent     string
	baseTransport http.RoundTripper
	certsDirs     []string
}

// makeOptions applies opts over the defaults and rejects contradictions.
func makeOptions(opts ...Option) (*options, error) {
	o := &options{
		platform:  hostPlatform(),
		tlsVerify: true,
		progress:  nopProgress{},
		jobs:      3,
		retries:   3,
		userAgent: "berth",
		certsDirs: DefaultCertsDirs,
	}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	if o.jobs < 1 {
		return nil, fmt.Errorf("jobs must be at least 1, got %d: %w", o.jobs, errdefs.ErrInvalidArgument)
	}
	if o.retries < 0 {
		return nil, fmt.Errorf("retries must not be negative, got %d: %w", o.retries, errdefs.ErrInvalidArgument)
	}
	if o.keychain == nil {
		o.keychain = newKeychain(o.authFile)
	}
	return o, nil
}

// hostPlatform is the platform images resolve to by default.
func hostPlatform() *v1.Platform {
	p := &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm" {
		p.Variant = "v7"
	}
	return p
}

// WithPlatform selects the platform ("linux/arm64", "linux/arm/v7") a
// multi-platform index resolves to. Default: the host's (linux/GOARCH). With an
// explicit platform, pulling a single-platform image of another platform fails.
func WithPlatform(platform string) Option {
	return func(o *options) error {
		if platform == "" {
			return nil
		}
		p, err := v1.ParsePlatform(platform)
		if err != nil || p.OS == "" || p.Architecture == "" {
			return fmt.Errorf("parse platform %q: want os/arch[/variant]: %w", platform, errdefs.ErrInvalidArgument)
		}
		o.platform, o.platformSet = p, true
		return nil
	}
}

// WithAllTags makes Pull fetch every tag of the repository. Default: only the
// referenced tag. It cannot be combined with a reference carrying a tag or digest
// other than the implied "latest".
func WithAllTags(all bool) Option {
	return func(o *options) error { o.allTags = all; return nil }
}

// WithTLSVerify(false) skips TLS verification and allows plain HTTP for every
// registry in this call (podman's --tls-verify=false). Default: true.
func WithTLSVerify(verify bool) Option {
	return func(o *options) error { o.tlsVerify = verify; return nil }
}

// WithInsecureRegistries names registries ("host", "host:port" or a CIDR such
// as "10.0.0.0/8") reached without TLS verification and over plain HTTP when
// HTTPS fails, like Docker's insecure-registries. Loopback hosts (localhost,
// 127.0.0.0/8, ::1) are always treated so. Default: none.
func WithInsecureRegistries(hosts ...string) Option {
	return func(o *options) error {
		for _, h := range hosts {
			h = strings.TrimSpace(h)
			if h == "" {
				continue
			}
			if strings.Contains(h, "/") {
				if _, _, err := net.ParseCIDR(h); err != nil {
					return fmt.Errorf("parse insecure registry %q: %w", h, errdefs.ErrInvalidArgument)
				}
			}
			o.insecure = append(o.insecure, h)
		}
		return nil
	}
}

// WithKeychain sets where credentials come from. Default: the file given by
// WithAuthFile, then Docker's config.json ($DOCKER_CONFIG or ~/.docker) with
// its credHelpers and credsStore, then Podman's auth.json.
func WithKeychain(kc authn.Keychain) Option {
	return func(o *options) error { o.keychain = kc; return nil }
}

// WithAuthFile names a credentials file in config.json format that is read
// first and that Login and Logout write instead of Docker's config.json.
// Default: none.
func WithAuthFile(path string) Option {
	return func(o *options) error { o.authFile = path; return nil }
}

// WithProgress sends per-blob transfer events to p. Default: none (quiet).
func WithProgress(p Progress) Option {
	return func(o *options) error {
		if p != nil {
			o.progress = p
		}
		return nil
	}
}

// WithJobs sets how many blobs transfer at once. Default: 3, as Docker's
// max-concurrent-downloads.
func WithJobs(n int) Option {
	return func(o *options) error { o.jobs = n; return nil }
}

// WithRetries sets how many times an interrupted blob download is resumed
// before Pull gives up. Default: 3.
func WithRetries(n int) Option {
	return func(o *options) error { o.retries = n; return nil }
}

// WithStagingDir sets where Pull keeps blobs while downloading. Partial
// downloads left there by an interrupted pull are resumed by the next one; a
// blob leaves it only after its digest is verified. Default: a fresh temporary
// directory removed when Pull returns (no resume across calls).
func WithStagingDir(dir string) Option {
	return func(o *options) error { o.stagingDir = dir; return nil }
}

// WithMountFrom names a repository on the destination registry that may
// already hold the image's blobs; Push asks the registry to mount them from
// there instead of uploading (cross-repository blob mount). Default: none;
// images read from a registry with ggcr's remote package mount from their
// source automatically.
func WithMountFrom(repo string) Option {
	return func(o *options) error { o.mountFrom = repo; return nil }
}

// WithUserAgent sets the User-Agent sent to registries. Default: "berth".
func WithUserAgent(ua string) Option {
	return func(o *options) error { o.userAgent = ua; return nil }
}

// WithTransport sets the base HTTP transport (tests, proxies). TLS settings
// of an *http.Transport are adjusted per registry. Default: a clone of
// http.DefaultTransport.
func WithTransport(rt http.RoundTripper) Option {
	return func(o *options) error { o.baseTransport = rt; return nil }
}

// WithCertsDirs sets the directories searched for <host[:port]>/ca.crt-style
// registry certificates (extra CAs *.crt, client certificate *.cert + *.key).
// Default: DefaultCertsDirs (/etc/docker/certs.d, /etc/containers/certs.d).
func WithCertsDirs(dirs ...string) Option {
	return func(o *options) error { o.certsDirs = dirs; return nil }
}

type nopProgress struct{}

func (nopProgress) Start(string, int64) {}
func (nopProgress) Add(string, int64)   {}
func (nopProgress) Done(string, string) {}
