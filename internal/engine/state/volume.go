package state

// Mount types a workload's MountSpec can have.
const (
	MountBind   = "bind"
	MountVolume = "volume"
	MountTmpfs  = "tmpfs"
)

// MountSpec is one filesystem a workload asked for beyond its root: a named
// or anonymous volume, a host directory or a tmpfs.
type MountSpec struct {
	Type     string `json:"type"`
	Source   string `json:"source,omitempty"` // volume name or host path; empty for tmpfs and a new anonymous volume
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	// Options are tmpfs mount options (size=64m, mode=1777…).
	Options []string `json:"options,omitempty"`
	// NoCopy keeps an empty volume empty instead of filling it from the image.
	NoCopy bool `json:"noCopy,omitempty"`
	// Anonymous marks a volume berth named itself (the image's VOLUME
	// entries, -v /path); `rm -v` removes those.
	Anonymous bool `json:"anonymous,omitempty"`
	// CreateHostPath makes a missing bind source (the -v form does, like
	// Docker; --mount does not).
	CreateHostPath bool `json:"createHostPath,omitempty"`
}
