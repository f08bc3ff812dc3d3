package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/auth"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// distribution v3 predates two parts of OCI distribution-spec 1.1, which
// this file adds in front of its handler: the referrers API
// (GET /v2/<name>/referrers/<digest>) and the OCI-Subject header on a
// manifest PUT whose manifest has a subject.

var (
	referrersPath = regexp.MustCompile(`^/v2/(.+)/referrers/([^/]+)$`)
	manifestPath  = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)
	blobPath      = regexp.MustCompile(`^/v2/(.+)/blobs/([^/]+)$`)
	uploadPath    = regexp.MustCompile(`^/v2/(.+)/blobs/uploads/`)
	canonicalLoc  = regexp.MustCompile(`/blobs/sha256:[0-9a-f]{64}`)
)

// maxManifestSize is the largest manifest distribution accepts (4 MiB).
const maxManifestSize = 4 << 20

// oci11 wraps the distribution handler with the OCI 1.1 additions.
type oci11 struct {
	next   http.Handler
	reg    distribution.Namespace
	access auth.AccessController // nil without authentication
}

func newOCI11(ctx context.Context, cfg Config, next http.Handler) (*oci11, error) {
	driver := filesystem.New(filesystem.DriverParameters{RootDirectory: cfg.Root, MaxThreads: 16})
	reg, err := storage.NewRegistry(ctx, driver)
	if err != nil {
		return nil, fmt.Errorf("open registry storage %s: %w", cfg.Root, err)
	}
	h := &oci11{next: next, reg: reg}
	if cfg.Htpasswd != "" {
		ac, err := auth.GetAccessController("htpasswd", map[string]any{"realm": realm, "path": cfg.Htpasswd})
		if err != nil {
			return nil, fmt.Errorf("configure htpasswd %s: %w", cfg.Htpasswd, err)
		}
		h.access = ac
	}
	return h, nil
}

func (h *oci11) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if m := referrersPath.FindStringSubmatch(r.URL.Path); m != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		h.referrers(w, r, m[1], m[2])
		return
	}
	if r.Method == http.MethodPut && manifestPath.MatchString(r.URL.Path) {
		h.putManifest(w, r)
		return
	}
	if d := requestedBlobDigest(r); d != "" {
		h.next.ServeHTTP(&digestWriter{ResponseWriter: w, digest: d}, r)
		return
	}
	h.next.ServeHTTP(w, r)
}

// requestedBlobDigest is the non-sha256 digest a blob request names (in the
// path, or the digest or mount parameter of an upload), or "".
//
// distribution stores every blob under its sha256 digest and links the
// digest the client used to it, but answers with the sha256 one in
// Docker-Content-Digest and Location; digestWriter puts the client's back.
func requestedBlobDigest(r *http.Request) string {
	var d string
	switch {
	case uploadPath.MatchString(r.URL.Path):
		d = r.URL.Query().Get("digest")
		if d == "" {
			d = r.URL.Query().Get("mount")
		}
	case blobPath.MatchString(r.URL.Path):
		d = blobPath.FindStringSubmatch(r.URL.Path)[2]
	}
	parsed, err := digest.Parse(d)
	if err != nil || parsed.Algorithm() == digest.Canonical {
		return ""
	}
	return parsed.String()
}

type digestWriter struct {
	http.ResponseWriter
	digest string
}

func (dw *digestWriter) WriteHeader(code int) {
	if code < 300 {
		h := dw.Header()
		if strings.HasPrefix(h.Get("Docker-Content-Digest"), "sha256:") {
			h.Set("Docker-Content-Digest", dw.digest)
		}
		if loc := h.Get("Location"); loc != "" {
			h.Set("Location", canonicalLoc.ReplaceAllString(loc, "/blobs/"+dw.digest))
		}
	}
	dw.ResponseWriter.WriteHeader(code)
}

func (dw *digestWriter) Unwrap() http.ResponseWriter { return dw.ResponseWriter }

// putManifest passes the PUT on and, when the manifest names a subject and
// was accepted, answers with the OCI-Subject header.
func (h *oci11) putManifest(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxManifestSize+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "MANIFEST_INVALID", "read manifest: "+err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var m struct {
		Subject *ocispec.Descriptor `json:"subject"`
	}
	if json.Unmarshal(body, &m) != nil || m.Subject == nil || m.Subject.Digest == "" {
		h.next.ServeHTTP(w, r)
		return
	}
	h.next.ServeHTTP(&subjectWriter{ResponseWriter: w, subject: m.Subject.Digest.String()}, r)
}

type subjectWriter struct {
	http.ResponseWriter
	subject string
}

func (s *subjectWriter) WriteHeader(code int) {
	if code == http.StatusCreated {
		s.Header().Set("OCI-Subject", s.subject)
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *subjectWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// referrers lists the manifests of repo whose subject is dgst, as an OCI
// index, optionally filtered by the artifactType query parameter.
func (h *oci11) referrers(w http.ResponseWriter, r *http.Request, repo, dgst string) {
	named, err := reference.WithName(repo)
	if err != nil {
		writeError(w, http.StatusBadRequest, "NAME_INVALID", "invalid repository name")
		return
	}
	if h.access != nil {
		_, err := h.access.Authorized(r, auth.Access{
			Resource: auth.Resource{Type: "repository", Name: repo},
			Action:   "pull",
		})
		if err != nil {
			var ch auth.Challenge
			if errors.As(err, &ch) {
				ch.SetHeaders(r, w)
			}
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
	}
	subject, err := digest.Parse(dgst)
	if err != nil {
		writeError(w, http.StatusBadRequest, "DIGEST_INVALID", "invalid digest")
		return
	}
	want := r.URL.Query().Get("artifactType")
	list, err := h.list(r.Context(), named, subject, want)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: list}
	idx.SchemaVersion = 2
	b, err := json.Marshal(idx)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	if want != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(b)
	}
}

// list scans the repository's manifests for those pointing at subject.
func (h *oci11) list(ctx context.Context, named reference.Named, subject digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	out := []ocispec.Descriptor{}
	repo, err := h.reg.Repository(ctx, named)
	if err != nil {
		return nil, err
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	enum, ok := ms.(distribution.ManifestEnumerator)
	if !ok {
		return out, nil
	}
	err = enum.Enumerate(ctx, func(d digest.Digest) error {
		man, err := ms.Get(ctx, d)
		if err != nil {
			return nil // deleted or unreadable: not a referrer
		}
		_, b, err := man.Payload()
		if err != nil {
			return nil
		}
		var m struct {
			MediaType    string              `json:"mediaType"`
			ArtifactType string              `json:"artifactType"`
			Config       *ocispec.Descriptor `json:"config"`
			Subject      *ocispec.Descriptor `json:"subject"`
			Annotations  map[string]string   `json:"annotations"`
		}
		if json.Unmarshal(b, &m) != nil || m.Subject == nil || m.Subject.Digest != subject {
			return nil
		}
		at := m.ArtifactType
		if at == "" && m.Config != nil && m.MediaType != ocispec.MediaTypeImageIndex {
			at = m.Config.MediaType
		}
		if artifactType != "" && at != artifactType {
			return nil
		}
		out = append(out, ocispec.Descriptor{
			MediaType:    m.MediaType,
			Digest:       d,
			Size:         int64(len(b)),
			ArtifactType: at,
			Annotations:  m.Annotations,
		})
		return nil
	})
	if err != nil && !isPathNotFound(err) {
		return nil, err
	}
	return out, nil
}

func isPathNotFound(err error) bool {
	return strings.Contains(err.Error(), "Path not found") || strings.Contains(err.Error(), "not found")
}

// writeError answers with an OCI error body.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}
