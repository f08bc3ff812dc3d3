// Package snapshot describes container root filesystems as mounts: a
// Snapshotter prepares writable snapshots over read-only layers and returns
// []Mount; MountAll and Unmount are the only code here that touches the kernel.
package snapshot
