package agentproto

// Setup prepares the guest before any process runs (TypeSetup).
type Setup struct {
	// Hostname is set with sethostname when not empty.
	Hostname string `json:"hostname,omitempty"`
	// RootTag is the virtio-fs tag of the shared root filesystem.
	RootTag string `json:"rootTag"`
	// RootReadonly mounts the root read-only.
	RootReadonly bool `json:"rootReadonly,omitempty"`
	// Mounts are kernel filesystems to mount inside the new root, in order,
	// after the agent's own /proc, /sys, /dev, /dev/pts.
	Mounts []Mount `json:"mounts,omitempty"`
	// PidsLimit, when > 0, caps the workload's processes (cgroup v2 pids.max).
	PidsLimit int64 `json:"pidsLimit,omitempty"`
	// Sysctl values to write under /proc/sys.
	Sysctl map[string]string `json:"sysctl,omitempty"`
	// Network configures the guest's NICs (net.go); nil leaves only lo.
	Network *Network `json:"network,omitempty"`
	// Shares are the bind mounts of host data, over virtio-fs (shares.go).
	Shares []Share `json:"shares,omitempty"`
}

// Mount is a filesystem the guest mounts; only kernel filesystems (tmpfs,
// proc, sysfs, devpts, mqueue, cgroup2) make sense, host paths do not exist
// in the guest.
type Mount struct {
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Destination string   `json:"destination"`
	Options     []string `json:"options,omitempty"`
}

// Ready says the guest is set up (TypeReady).
type Ready struct {
	// Kernel is the guest's kernel release (uname -r).
	Kernel string `json:"kernel"`
}

// Process is a process to run (TypeStart), shaped after the OCI runtime
// spec's process object.
type Process struct {
	Args           []string `json:"args"`
	Env            []string `json:"env,omitempty"`
	Cwd            string   `json:"cwd,omitempty"`
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGids []uint32 `json:"additionalGids,omitempty"`
	Umask          *uint32  `json:"umask,omitempty"`
	Terminal       bool     `json:"terminal,omitempty"`
	Width          uint16   `json:"width,omitempty"`
	Height         uint16   `json:"height,omitempty"`
	Rlimits        []Rlimit `json:"rlimits,omitempty"`
	NoNewPrivs     bool     `json:"noNewPrivileges,omitempty"`
	// Stdin says the host will send stdin; without it stdin is /dev/null.
	Stdin bool `json:"stdin,omitempty"`
}

// Rlimit is one resource limit, by its OCI name (RLIMIT_NOFILE…).
type Rlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

// Started says a process runs (TypeStarted).
type Started struct {
	// Pid is the process's PID inside the guest.
	Pid int `json:"pid"`
}

// Error reports a failed Setup or Start (TypeError).
type Error struct {
	Message string `json:"message"`
	// NotFound is set when the executable does not exist.
	NotFound bool `json:"notFound,omitempty"`
}

// Signal signals a process (TypeSignal).
type Signal struct {
	Signal int `json:"signal"`
	// All signals every process in the guest but the agent (init only).
	All bool `json:"all,omitempty"`
}

// Resize sets a terminal's size (TypeResize).
type Resize struct {
	Width  uint16 `json:"width"`
	Height uint16 `json:"height"`
}

// Exit says how a process ended (TypeExit).
type Exit struct {
	// Code is the exit code, 128+Signal when killed by a signal.
	Code int `json:"code"`
	// Signal is the signal that killed the process, 0 if it exited.
	Signal int `json:"signal,omitempty"`
}
