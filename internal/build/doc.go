// Package build turns a Dockerfile into an image, the way `docker build`
// does: buildkit's parser reads the Dockerfile, each instruction of the
// stages needed becomes a step, and each step that changes files becomes a
// gzip layer made from the diff of a writable snapshot. Steps are cached by
// their parent, instruction, arguments and content.
//
// The package knows no backend: the image store, the snapshotter and the
// executor that runs RUN commands are small interfaces its caller
// implements (the engine wires berth's image store, the overlay snapshotter
// and the OCI runtime).
package build
