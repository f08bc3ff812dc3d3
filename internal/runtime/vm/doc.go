// Package vm is berth's microVM backend: it implements runtime.Runtime by
// booting each workload in its own QEMU microVM (Debian's cloud kernel, an
// initramfs holding berth-agent), with the bundle's root filesystem shared
// into the guest over virtio-fs and the agent reached over virtio-serial
// (see package agentproto).
//
// Boot is an ordered list of named handlers (Handlers), validated before
// anything starts; QEMU's argv is a value built by CommandBuilder and tested
// without launching anything. Every VM has a state directory holding its
// sockets, serial console log and state.json (with the PIDs of QEMU and
// virtiofsd), so another process can inspect, signal (through the owner's
// control socket) or delete it, even after the owning process died.
package vm
