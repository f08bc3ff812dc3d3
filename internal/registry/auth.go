package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/credentials"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berthdev/berth/internal/errdefs"
)

// dockerHubAuthKey is the key Docker uses for Docker Hub in config.json.
const dockerHubAuthKey = "https://index.docker.io/v1/"

// authKey is the config.json key for a normalised host.
func authKey(host string) string {
	if host == "docker.io" {
		return dockerHubAuthKey
	}
	return host
}

// DockerConfigPath is Docker's config.json: $DOCKER_CONFIG/config.json, else
// ~/.docker/config.json.
func DockerConfigPath() string {
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		return filepath.Join(d, config.ConfigFileName)
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".docker", config.ConfigFileName)
}

// podmanAuthPaths are the files Podman and skopeo keep credentials in, read
// when no config.json names the registry.
func podmanAuthPaths() []string {
	var ps []string
	if p := os.Getenv("REGISTRY_AUTH_FILE"); p != "" {
		ps = append(ps, p)
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		ps = append(ps, filepath.Join(d, "containers", "auth.json"))
	}
	if d, err := os.UserConfigDir(); err == nil {
		ps = append(ps, filepath.Join(d, "containers", "auth.json"))
	}
	return ps
}

// keychain resolves credentials from config.json-format files in order.
type keychain struct{ authFile string }

func newKeychain(authFile string) authn.Keychain { return &keychain{authFile: authFile} }

func (k *keychain) paths() []string {
	var ps []string
	if k.authFile != "" {
		ps = append(ps, k.authFile)
	}
	ps = append(ps, DockerConfigPath())
	return append(ps, podmanAuthPaths()...)
}

// Resolve implements authn.Keychain. It consults each file's credHelpers,
// credsStore and auths for the registry and returns the first credentials
// found, or anonymous access.
func (k *keychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	key := authKey(NormalizeHost(target.RegistryStr()))
	for _, p := range k.paths() {
		f, err := loadAuthFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ac, err := f.cf.GetAuthConfig(key)
		if err != nil {
			return nil, fmt.Errorf("read credentials for %s from %s: %w", key, p, err)
		}
		if ac.Username == "" && ac.Password == "" && ac.Auth == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
			continue
		}
		return authn.FromConfig(authn.AuthConfig{
			Username:      ac.Username,
			Password:      ac.Password,
			Auth:          ac.Auth,
			IdentityToken: ac.IdentityToken,
			RegistryToken: ac.RegistryToken,
		}), nil
	}
	return authn.Anonymous, nil
}

// authFile is a config.json whose fields other than "auths" are written back
// exactly as read, including ones docker/cli does not know.
type authFile struct {
	path string
	raw  map[string]json.RawMessage
	cf   *configfile.ConfigFile
}

func loadAuthFile(path string) (*authFile, error) {
	f := &authFile{path: path, raw: map[string]json.RawMessage{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		f.cf = configfile.New(path)
		return f, err
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &f.raw); err != nil {
			return nil, fmt.Errorf("parse %s: %w: %v", path, errdefs.ErrCorrupt, err)
		}
	}
	cf, err := config.LoadFromReader(bytes.NewReader(b))
	if err != nil && len(bytes.TrimSpace(b)) > 0 {
		return nil, fmt.Errorf("parse %s: %w: %v", path, errdefs.ErrCorrupt, err)
	}
	if cf == nil {
		cf = configfile.New(path)
	}
	cf.Filename = path
	if cf.AuthConfigs == nil {
		cf.AuthConfigs = map[string]types.AuthConfig{}
	}
	f.cf = cf
	return f, nil
}

// GetAuthConfigs lets docker/cli's credential stores use the file.
func (f *authFile) GetAuthConfigs() map[string]types.AuthConfig { return f.cf.AuthConfigs }

// GetFilename lets docker/cli's credential stores use the file.
func (f *authFile) GetFilename() string { return f.path }

// Save replaces "auths" in the file, keeping every other field, atomically
// (temporary file and rename, mode 0600, following a symlink).
func (f *authFile) Save() error {
	var buf bytes.Buffer
	if err := f.cf.SaveToWriter(&buf); err != nil {
		return fmt.Errorf("encode %s: %w", f.path, err)
	}
	var known map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &known); err != nil {
		return fmt.Errorf("encode %s: %w", f.path, err)
	}
	f.raw["auths"] = known["auths"]
	out, err := json.MarshalIndent(f.raw, "", "\t")
	if err != nil {
		return fmt.Errorf("encode %s: %w", f.path, err)
	}
	target := f.path
	if t, err := filepath.EvalSymlinks(target); err == nil {
		target = t
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return fmt.Errorf("save %s: %w", f.path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".tmp*")
	if err != nil {
		return fmt.Errorf("save %s: %w", f.path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(out, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save %s: %w", f.path, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save %s: %w", f.path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save %s: %w", f.path, err)
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return fmt.Errorf("save %s: %w", f.path, err)
	}
	return nil
}

// helperFor returns the credential helper config.json assigns to key.
func (f *authFile) helperFor(key string) string {
	if h, ok := f.cf.CredentialHelpers[key]; ok {
		return h
	}
	return f.cf.CredentialsStore
}

// LoginResult says where Login saved the credentials.
type LoginResult struct {
	// Host is the registry as normalised ("docker.io" for Docker Hub).
	Host string
	// Path is the config.json-format file updated.
	Path string
	// Helper is the credential helper (docker-credential-<Helper>) holding the
	// secret, or "" when it is stored base64-encoded in Path.
	Helper string
}

// writePath is the file Login and Logout change.
func (o *options) writePath() string {
	if o.authFile != "" {
		return o.authFile
	}
	return DockerConfigPath()
}

// registryFor returns the ggcr registry for a normalised host.
func (o *options) registryFor(host string) (name.Registry, error) {
	var nopts []name.Option
	if o.isInsecure(host) {
		nopts = append(nopts, name.Insecure)
	}
	if host == "docker.io" {
		host = name.DefaultRegistry
	}
	reg, err := name.NewRegistry(host, nopts...)
	if err != nil {
		return name.Registry{}, fmt.Errorf("parse registry %q: %w: %v", host, errdefs.ErrInvalidArgument, err)
	}
	return reg, nil
}

// Login checks user and password against the registry host (bearer-token and
// basic authentication both work) and, when they are accepted, saves them in
// config.json, through the credential helper it names for the host if any.
// Wrong credentials give an error of class errdefs.ErrUnauthorized.
func Login(ctx context.Context, host, user, pass string, opts ...Option) (*LoginResult, error) {
	h := NormalizeHost(host)
	res, err := login(ctx, h, user, pass, opts)
	return res, wrap("login", h, err)
}

func login(ctx context.Context, host, user, pass string, opts []Option) (*LoginResult, error) {
	o, err := makeOptions(opts...)
	if err != nil {
		return nil, err
	}
	if user == "" || pass == "" {
		return nil, classed(errdefs.ErrInvalidArgument, nil, "username and password are required")
	}
	if err := o.checkCredentials(ctx, host, authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})); err != nil {
		return nil, err
	}
	path := o.writePath()
	f, err := loadAuthFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key := authKey(host)
	ac := types.AuthConfig{Username: user, Password: pass, ServerAddress: key}
	res := &LoginResult{Host: host, Path: path, Helper: f.helperFor(key)}
	if res.Helper != "" {
		if err := credentials.NewNativeStore(f, res.Helper).Store(ac); err != nil {
			return nil, fmt.Errorf("store credentials with docker-credential-%s: %w", res.Helper, err)
		}
		return res, nil
	}
	f.cf.AuthConfigs[key] = ac
	return res, f.Save()
}

// checkCredentials authenticates against host and reads /v2/ with the result.
func (o *options) checkCredentials(ctx context.Context, host string, auth authn.Authenticator) error {
	reg, err := o.registryFor(host)
	if err != nil {
		return err
	}
	rt, err := transport.NewWithContext(ctx, reg, auth, transport.NewUserAgent(o.transport(), o.userAgent), nil)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return classed(errdefs.ErrUnauthorized, nil, "registry rejected the username or password")
	default:
		return classed(errdefs.ErrUnavailable, nil, "GET /v2/: unexpected status "+resp.Status)
	}
}

// Logout removes the saved credentials for host from config.json (and from
// its credential helper). It returns an error of class errdefs.ErrNotFound
// when none were saved.
func Logout(ctx context.Context, host string, opts ...Option) error {
	h := NormalizeHost(host)
	return wrap("logout", h, logout(ctx, h, opts))
}

func logout(_ context.Context, host string, opts []Option) error {
	o, err := makeOptions(opts...)
	if err != nil {
		return err
	}
	path := o.writePath()
	f, err := loadAuthFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return classed(errdefs.ErrNotFound, nil, "not logged in")
	}
	if err != nil {
		return err
	}
	key := authKey(host)
	if helper := f.helperFor(key); helper != "" {
		store := credentials.NewNativeStore(f, helper)
		ac, err := store.Get(key)
		if err != nil {
			return fmt.Errorf("read credentials with docker-credential-%s: %w", helper, err)
		}
		if ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" {
			if _, ok := f.cf.AuthConfigs[key]; !ok {
				return classed(errdefs.ErrNotFound, nil, "not logged in")
			}
		}
		if err := store.Erase(key); err != nil {
			return fmt.Errorf("erase credentials with docker-credential-%s: %w", helper, err)
		}
		return nil
	}
	if _, ok := f.cf.AuthConfigs[key]; !ok {
		return classed(errdefs.ErrNotFound, nil, "not logged in")
	}
	delete(f.cf.AuthConfigs, key)
	return f.Save()
}
