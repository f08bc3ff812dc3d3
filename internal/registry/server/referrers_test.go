package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"

	"github.com/berthdev/berth/internal/registry/server"
)

func TestReferrersAndSubjectHeader(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := serve(t, server.Config{Root: t.TempDir(), Htpasswd: htpasswd})
	auth := remote.WithAuth(&authn.Basic{Username: "alice", Password: "pw"})
	subject := randomImage(t)
	sr := ref(t, srv, "ref/app:1")
	if err := remote.Write(sr, subject, auth); err != nil {
		t.Fatal(err)
	}
	sdesc, err := remote.Head(sr, auth)
	if err != nil {
		t.Fatal(err)
	}
	art := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	art = mutate.ConfigMediaType(art, "application/vnd.example.sbom")
	art = mutate.Subject(art, *sdesc).(v1.Image)
	ad, _ := art.Digest()

	// Push the artifact by hand to see the OCI-Subject header.
	if err := remote.Write(ref(t, srv, "ref/app:sbom"), art, auth); err != nil {
		t.Fatal(err)
	}
	raw, _ := art.RawManifest()
	req, _ := http.NewRequest(http.MethodPut, srv.URL()+"/v2/ref/app/manifests/"+ad.String(), bytes.NewReader(raw))
	req.SetBasicAuth("alice", "pw")
	req.Header.Set("Content-Type", string(types.OCIManifestSchema1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("OCI-Subject") != sdesc.Digest.String() {
		t.Fatalf("PUT with subject: %d, OCI-Subject %q", resp.StatusCode, resp.Header.Get("OCI-Subject"))
	}

	get := func(query, user string) (*http.Response, ocispec.Index) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL()+"/v2/ref/app/referrers/"+sdesc.Digest.String()+query, nil)
		if user != "" {
			req.SetBasicAuth(user, "pw")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var idx ocispec.Index
		_ = json.NewDecoder(resp.Body).Decode(&idx)
		return resp, idx
	}
	if resp, _ := get("", ""); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("anonymous referrers: %d", resp.StatusCode)
	}
	resp, idx := get("", "alice")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex ||
		len(idx.Manifests) != 1 || idx.Manifests[0].Digest.String() != ad.String() ||
		idx.Manifests[0].ArtifactType != "application/vnd.example.sbom" {
		t.Fatalf("referrers: %d %+v", resp.StatusCode, idx)
	}
	resp, idx = get("?artifactType=application/other", "alice")
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" || len(idx.Manifests) != 0 {
		t.Fatalf("filtered referrers: %+v", idx)
	}
}
