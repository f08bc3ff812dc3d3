// Package errdefs defines the error classes callers branch on. Packages wrap
// one of these sentinels with %w and the object concerned; the CLI maps a class
// to an exit status and the API (later) to an HTTP status.
package errdefs

import "errors"

var (
	// ErrNotFound means the named object (image, container, volume…) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists means an object with that name or ID exists already.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument means the caller's input is malformed.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrConflict means the object is in a state that forbids the operation
	// (removing a running container, an image in use…).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable means a dependency (runtime binary, kernel, QEMU) is missing or unusable.
	ErrUnavailable = errors.New("unavailable")
	// ErrCorrupt means stored or received content failed verification
	// (digest mismatch, malformed manifest, unsafe archive).
	ErrCorrupt = errors.New("corrupt or unsafe content")
	// ErrUnauthorized means a registry refused the credentials.
	ErrUnauthorized = errors.New("unauthorized")
)

// IsNotFound reports whether err is of class ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsConflict reports whether err is of class ErrConflict.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsInvalidArgument reports whether err is of class ErrInvalidArgument.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }
