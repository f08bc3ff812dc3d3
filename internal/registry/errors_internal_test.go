package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berthdev/berth/internal/errdefs"
)

func TestClassify(t *testing.T) {
	var syntaxErr error = &json.SyntaxError{Offset: 3}
	for _, tc := range []struct {
		err   error
		class error
		text  string
	}{
		{&transport.Error{StatusCode: http.StatusUnauthorized}, errdefs.ErrUnauthorized, "unauthorized: "},
		{&transport.Error{StatusCode: http.StatusForbidden}, errdefs.ErrUnauthorized, ""},
		{&transport.Error{StatusCode: http.StatusNotFound}, errdefs.ErrNotFound, "not found: "},
		{&transport.Error{StatusCode: http.StatusServiceUnavailable}, errdefs.ErrUnavailable, ""},
		{&transport.Error{StatusCode: http.StatusBadRequest, Errors: []transport.Diagnostic{{Code: transport.ManifestInvalidErrorCode}}}, errdefs.ErrCorrupt, ""},
		{&net.DNSError{Name: "nope.invalid", Err: "no such host", IsNotFound: true}, errdefs.ErrUnavailable, "unknown host nope.invalid"},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), errdefs.ErrUnavailable, "connection refused"},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), errdefs.ErrUnavailable, "connection closed"},
		{fmt.Errorf("parse: %w", syntaxErr), errdefs.ErrCorrupt, "invalid JSON"},
		{errors.New("error verifying sha256 checksum after reading 10 bytes; got x, want y"), errdefs.ErrCorrupt, "does not match its digest"},
		{context.Canceled, nil, "context canceled"},
	} {
		err := wrap("pull", "example.com/x:1", tc.err)
		if tc.class != nil && !errors.Is(err, tc.class) {
			t.Errorf("%v: got %v, want class %v", tc.err, err, tc.class)
		}
		if !errors.Is(err, tc.err) && tc.class == nil {
			t.Errorf("%v: cause lost in %v", tc.err, err)
		}
		if !strings.HasPrefix(err.Error(), "pull example.com/x:1: ") || !strings.Contains(err.Error(), tc.text) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: message %q, want it to contain %q on one line", tc.err, err, tc.text)
		}
	}
	if wrap("pull", "x", nil) != nil {
		t.Error("wrap(nil) != nil")
	}
}

func TestIsInsecure(t *testing.T) {
	o, err := makeOptions(WithInsecureRegistries("reg.lan:5000", "10.1.0.0/16", "plain.lan"))
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"localhost:5000": true, "127.0.0.1": true, "[::1]:5000": true, "a.localhost": true,
		"reg.lan:5000": true, "reg.lan:5001": false, "10.1.2.3:80": true, "10.2.0.1": false,
		"plain.lan:443": true, "ghcr.io": false, "192.168.1.1:5000": false,
	} {
		if got := o.isInsecure(host); got != want {
			t.Errorf("isInsecure(%q) = %v, want %v", host, got, want)
		}
	}
	if _, err := makeOptions(WithInsecureRegistries("10.0.0.0/99")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad CIDR: %v", err)
	}
	if _, err := makeOptions(WithPlatform("arm64")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad platform: %v", err)
	}
}
