// Package ocicli is berth-vm, a runc-compatible command line over the
// microVM backend, so that other engines (Podman through conmon) can run
// OCI bundles as microVMs: create, start, state, kill, delete and exec.
//
// create returns once the VM is booted and its agent ready, leaving a
// detached holder process (its PID goes to --pid-file) that owns QEMU,
// relays the workload's stdio (create's own, or a pty sent to
// --console-socket) and exits with the workload's exit code, which is what
// conmon waits for as a subreaper. exec --detach leaves a holder the same way.
// The other verbs reach the holder through the VM's control socket.
package ocicli
