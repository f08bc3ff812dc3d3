// Package guest is berth-agent, the PID 1 of a berth microVM: it boots the
// guest (kernel filesystems, modules, the virtio-fs root), then serves the
// agentproto conversation with the host: runs the workload's init and exec
// processes, relays their streams and signals, reaps every child and powers
// the VM off once init has exited and the host has acknowledged it.
//
// It runs in a static binary (cmd/berth-agent) inside the initramfs the host
// backend builds; its own log lines go to the serial console, which the host
// keeps in the VM's state directory.
package guest
