// Package image is berth's content-addressed image store: verified blobs in an
// OCI image-layout directory, a name→image index in bbolt, docker/OCI archive
// load and save, and layers unpacked once into read-only overlay lower dirs.
package image
