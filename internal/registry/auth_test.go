package registry_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/registry"
)

// writeHtpasswd writes a bcrypt htpasswd file for user.
func writeHtpasswd(t *testing.T, user, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(p, []byte(user+":"+string(h)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tokenRegistry is ggcr's in-process registry behind a bearer-token
// challenge whose token endpoint accepts one user.
func tokenRegistry(t *testing.T, user, pass string) string {
	t.Helper()
	inner := quietGGCR()
	const token = "berth-test-token"
	var ts *httptest.Server
	ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				http.Error(w, `{"details":"incorrect username or password"}`, http.StatusUnauthorized)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"token": token, "access_token": token})
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+ts.URL+`/token",service="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://")
}

// dockerConfig points DOCKER_CONFIG at a fresh directory holding content
// (if any) as config.json, and returns the file's path.
func dockerConfig(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("REGISTRY_AUTH_FILE", filepath.Join(dir, "none.json"))
	t.Setenv("XDG_RUNTIME_DIR", dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	p := filepath.Join(dir, "config.json")
	if content != "" {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func TestLoginPullLogout(t *testing.T) {
	basic := newTestRegistry(t, regOpts{htpasswd: writeHtpasswd(t, "alice", "s3cret")})
	for _, tc := range []struct {
		name string
		host string
	}{
		{"basic", basic.host},
		{"bearer", tokenRegistry(t, "alice", "s3cret")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			cfg := dockerConfig(t, `{"psFormat": "table {{.ID}}", "x-unknown": {"keep": [1, 2]}, "auths": {"other.example": {"auth": "`+
				base64.StdEncoding.EncodeToString([]byte("bob:pw"))+`"}}}`)
			ref := tc.host + "/test/auth:1"
			img := randomImage(t, 1)

			if _, err := registry.Push(ctx, ref, img); !errors.Is(err, errdefs.ErrUnauthorized) {
				t.Fatalf("anonymous push: %v, want ErrUnauthorized", err)
			}
			_, err := registry.Login(ctx, tc.host, "alice", "wrong")
			if !errors.Is(err, errdefs.ErrUnauthorized) || !strings.Contains(err.Error(), "unauthorized") {
				t.Fatalf("wrong password: %v, want ErrUnauthorized", err)
			}
			t.Logf("wrong password: %v", err)
			if m := readJSON(t, cfg); len(m["auths"].(map[string]any)) != 1 {
				t.Fatalf("failed login changed config.json: %v", m)
			}

			res, err := registry.Login(ctx, tc.host, "alice", "s3cret")
			if err != nil {
				t.Fatalf("login: %v", err)
			}
			if res.Path != cfg || res.Helper != "" {
				t.Fatalf("login result %+v", res)
			}
			m := readJSON(t, cfg)
			auths := m["auths"].(map[string]any)
			entry, _ := auths[tc.host].(map[string]any)
			if entry["auth"] != base64.StdEncoding.EncodeToString([]byte("alice:s3cret")) || auths["other.example"] == nil {
				t.Fatalf("config.json auths after login: %v", auths)
			}
			if m["psFormat"] != "table {{.ID}}" || m["x-unknown"] == nil {
				t.Fatalf("login lost other fields: %v", m)
			}
			if fi, _ := os.Stat(cfg); fi.Mode().Perm() != 0o600 {
				t.Errorf("config.json mode %v", fi.Mode())
			}

			// The credentials saved are used by push and pull.
			if _, err := registry.Push(ctx, ref, img); err != nil {
				t.Fatalf("push after login: %v", err)
			}
			if _, err := registry.Pull(ctx, ref, newLayoutStore(t)); err != nil {
				t.Fatalf("pull after login: %v", err)
			}

			if err := registry.Logout(ctx, tc.host); err != nil {
				t.Fatal(err)
			}
			if err := registry.Logout(ctx, tc.host); !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("second logout: %v, want ErrNotFound", err)
			}
			if m := readJSON(t, cfg); m["x-unknown"] == nil || m["auths"].(map[string]any)[tc.host] != nil {
				t.Fatalf("config.json after logout: %v", m)
			}
			if _, err := registry.Pull(ctx, ref, newLayoutStore(t)); !errors.Is(err, errdefs.ErrUnauthorized) {
				t.Fatalf("pull after logout: %v, want ErrUnauthorized", err)
			}
		})
	}
}

func TestAuthFileOption(t *testing.T) {
	ctx := t.Context()
	dockerCfg := dockerConfig(t, "")
	reg := newTestRegistry(t, regOpts{htpasswd: writeHtpasswd(t, "alice", "s3cret")})
	authFile := filepath.Join(t.TempDir(), "auth.json")
	if _, err := registry.Login(ctx, reg.host, "alice", "s3cret", registry.WithAuthFile(authFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dockerCfg); !os.IsNotExist(err) {
		t.Fatalf("login with an auth file wrote config.json: %v", err)
	}
	ref := reg.ref("test/authfile:1")
	if _, err := registry.Push(ctx, ref, randomImage(t, 1), registry.WithAuthFile(authFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Pull(ctx, ref, newLayoutStore(t)); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("pull without the auth file: %v", err)
	}
}

const credHelperScript = `#!/bin/sh
# Test credential helper keeping one file per server in $BERTH_HELPER_DIR.
set -e
dir="$BERTH_HELPER_DIR"
key() { printf '%s' "$1" | tr '/:' '__'; }
case "$1" in
store)
	payload=$(cat)
	server=$(printf '%s' "$payload" | sed -n 's/.*"ServerURL":"\([^"]*\)".*/\1/p')
	printf '%s' "$payload" > "$dir/$(key "$server")"
	;;
get)
	server=$(cat)
	f="$dir/$(key "$server")"
	if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi
	;;
erase)
	server=$(cat)
	rm -f "$dir/$(key "$server")"
	;;
list)
	echo '{}'
	;;
esac
`

func TestCredentialHelper(t *testing.T) {
	ctx := t.Context()
	reg := newTestRegistry(t, regOpts{htpasswd: writeHtpasswd(t, "alice", "s3cret")})
	binDir, store := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(binDir, "docker-credential-berthtest"), []byte(credHelperScript), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("BERTH_HELPER_DIR", store)
	cfg := dockerConfig(t, `{"credHelpers": {"`+reg.host+`": "berthtest"}}`)

	res, err := registry.Login(ctx, reg.host, "alice", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if res.Helper != "berthtest" {
		t.Fatalf("login did not use the helper: %+v", res)
	}
	saved, _ := os.ReadDir(store)
	if len(saved) != 1 {
		t.Fatalf("helper holds %d entries", len(saved))
	}
	m := readJSON(t, cfg)
	if a := m["auths"].(map[string]any)[reg.host].(map[string]any); len(a) != 0 {
		t.Fatalf("secret written to config.json: %v", a)
	}
	ref := reg.ref("test/helper:1")
	if _, err := registry.Push(ctx, ref, randomImage(t, 1)); err != nil {
		t.Fatalf("push with helper credentials: %v", err)
	}
	if err := registry.Logout(ctx, reg.host); err != nil {
		t.Fatal(err)
	}
	if saved, _ := os.ReadDir(store); len(saved) != 0 {
		t.Fatalf("logout left %d helper entries", len(saved))
	}

	// credsStore applies to every registry without a credHelpers entry.
	dockerConfig(t, `{"credsStore": "berthtest"}`)
	if res, err := registry.Login(ctx, reg.host, "alice", "s3cret"); err != nil || res.Helper != "berthtest" {
		t.Fatalf("credsStore login: %+v, %v", res, err)
	}
	if _, err := registry.Pull(ctx, ref, newLayoutStore(t)); err != nil {
		t.Fatalf("pull with credsStore credentials: %v", err)
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"":                            "docker.io",
		"docker.io":                   "docker.io",
		"https://index.docker.io/v1/": "docker.io",
		"registry-1.docker.io":        "docker.io",
		"http://localhost:5000/v2/":   "localhost:5000",
		"ghcr.io":                     "ghcr.io",
	} {
		if got := registry.NormalizeHost(in); got != want {
			t.Errorf("NormalizeHost(%q) = %q, want %q", in, got, want)
		}
	}
}
