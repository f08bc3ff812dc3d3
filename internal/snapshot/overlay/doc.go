// Package overlay is the overlayfs snapshotter: each snapshot is an upper and
// work dir over read-only lower dirs; Diff turns an upper dir back into an OCI
// layer tar.
package overlay
