package agentproto

// Share is one bind mount of host data into the guest: a path inside a
// virtio-fs share (a host directory, or the per-VM directory in which the
// host shows exactly the files bound into the VM) mounted on Destination.
// The agent mounts each Tag once, out of the workload's sight, binds from it
// and detaches it again, so only the binds stay visible.
type Share struct {
	// Tag is the virtio-fs tag of the share (berthshare0, berthshare1…).
	Tag string `json:"tag"`
	// Path is what to bind, relative to the share's root; empty binds the
	// root itself (a directory bind). It is always a local path: no "..",
	// not absolute.
	Path string `json:"path,omitempty"`
	// Destination is where it appears inside the workload's root; the
	// agent creates a missing mount point (a directory, or an empty file
	// when Path is a file).
	Destination string `json:"destination"`
	// ReadOnly makes this bind read-only: writes fail with EROFS. When
	// every bind from a share is read-only the host exports the share
	// read-only too, so a remount in the guest cannot lift it.
	ReadOnly bool `json:"readonly,omitempty"`
	// Options are the other OCI mount options that apply to a bind:
	// nosuid, nodev, noexec, noatime… Propagation options have no meaning
	// across the VM boundary: binds in the guest are private.
	Options []string `json:"options,omitempty"`
	// Before orders the bind among Setup.Mounts, as in the OCI spec: it is
	// made just before Setup.Mounts[Before] (after them all when Before is
	// len(Setup.Mounts)).
	Before int `json:"before"`
}
