package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berthdev/berth/internal/errdefs"
)

// Error is what Pull, Push, Login and Logout return. It reads as one line,
// "pull docker.io/library/busybox:latest: unauthorized: …", and matches both
// its class (errdefs.ErrUnauthorized, ErrNotFound, ErrCorrupt, ErrUnavailable,
// ErrInvalidArgument) and the underlying error (e.g. *transport.Error) with
// errors.Is and errors.As.
type Error struct {
	Op    string // "pull", "push", "login", "logout"
	Ref   string // the normalised reference or host
	Class error  // an errdefs sentinel, or nil when unclassified
	Err   error  // the cause
}

// Error implements error.
func (e *Error) Error() string {
	msg := oneLine(e.Err.Error())
	if e.Class != nil && !strings.HasPrefix(msg, e.Class.Error()) {
		msg = e.Class.Error() + ": " + msg
	}
	return e.Op + " " + e.Ref + ": " + msg
}

// Unwrap returns the class and the cause.
func (e *Error) Unwrap() []error {
	if e.Class == nil {
		return []error{e.Err}
	}
	return []error{e.Class, e.Err}
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r", "")
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// wrap classifies err and returns it as an *Error; nil stays nil and an
// *Error is returned unchanged.
func wrap(op, ref string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	cls, cause := classify(err)
	return &Error{Op: op, Ref: ref, Class: cls, Err: cause}
}

// errClass carries a class decided where the error was made.
type errClass struct {
	class error
	msg   string
	err   error
}

func (e *errClass) Error() string {
	if e.err == nil {
		return e.msg
	}
	return e.msg + ": " + e.err.Error()
}

func (e *errClass) Unwrap() []error {
	if e.err == nil {
		return []error{e.class}
	}
	return []error{e.class, e.err}
}

// classed returns an error of class c reading "msg: err".
func classed(c error, err error, msg string) error {
	return &errClass{class: c, msg: msg, err: err}
}

// classify returns the errdefs class of err and the error to show, turning
// transport failures into short explanations.
func classify(err error) (class, cause error) {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, err
	}
	for _, c := range []error{errdefs.ErrUnauthorized, errdefs.ErrNotFound, errdefs.ErrCorrupt,
		errdefs.ErrInvalidArgument, errdefs.ErrUnavailable, errdefs.ErrConflict, errdefs.ErrAlreadyExists} {
		if errors.Is(err, c) {
			return c, err
		}
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch {
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return errdefs.ErrUnauthorized, err
		case te.StatusCode == http.StatusNotFound:
			return errdefs.ErrNotFound, err
		case te.StatusCode == http.StatusTooManyRequests || te.StatusCode >= 500:
			return errdefs.ErrUnavailable, err
		case hasCode(te, transport.ManifestInvalidErrorCode, transport.DigestInvalidErrorCode,
			transport.BlobUploadInvalidErrorCode, transport.SizeInvalidErrorCode):
			return errdefs.ErrCorrupt, err
		case te.StatusCode == http.StatusBadRequest:
			return errdefs.ErrInvalidArgument, err
		}
		return nil, err
	}
	if msg := err.Error(); strings.Contains(msg, "error verifying sha256 checksum") ||
		strings.Contains(msg, "does not match requested digest") {
		return errdefs.ErrCorrupt, classed(errdefs.ErrCorrupt, err, "content does not match its digest")
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return errdefs.ErrUnavailable, classed(errdefs.ErrUnavailable, nil,
			"registry speaks plain HTTP, not HTTPS (name it an insecure registry to allow that)")
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return errdefs.ErrUnavailable, classed(errdefs.ErrUnavailable, nil, "unknown host "+dnsErr.Name)
	}
	var (
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		certErr    x509.CertificateInvalidError
		verifyErr  *tls.CertificateVerificationError
		recordErr  tls.RecordHeaderError
		alertErr   tls.AlertError
		netOpError *net.OpError
	)
	switch {
	case errors.As(err, &verifyErr), errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &certErr):
		return errdefs.ErrUnavailable, classed(errdefs.ErrUnavailable, err, "TLS verification failed (name the registry insecure or use --tls-verify=false to skip it)")
	case errors.As(err, &recordErr), errors.As(err, &alertErr):
		return errdefs.ErrUnavailable, classed(errdefs.ErrUnavailable, err, "TLS handshake failed")
	case errors.Is(err, syscall.ECONNREFUSED):
		return errdefs.ErrUnavailable, classed(errdefs.ErrUnavailable, nil, "connection refused"+opAddr(err))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
		return errdefs.ErrUnavailable, classed(errdefs.ErrUnavailable, err, "connection closed before the transfer finished")
	case errors.As(err, &netOpError):
		return errdefs.ErrUnavailable, err
	}
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	if errors.As(err, &syntaxErr) || errors.As(err, &typeErr) {
		return errdefs.ErrCorrupt, classed(errdefs.ErrCorrupt, err, "invalid JSON from registry")
	}
	return nil, err
}

func opAddr(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Addr != nil {
		return " by " + op.Addr.String()
	}
	return ""
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}
