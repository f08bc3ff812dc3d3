package vm

import (
	"fmt"
	"strconv"
	"strings"
)

// VMConfig is everything a VM's QEMU and virtiofsd command lines depend on.
// It is a plain value: Args builds the argv without launching anything.
type VMConfig struct {
	// ID names the VM (QEMU's -name, so ps shows which VM a QEMU is).
	ID string
	// QEMU and Virtiofsd are the binaries.
	QEMU, Virtiofsd string
	// Machine is "microvm" or "q35"; Accel "kvm" or "tcg".
	Machine, Accel string
	MemoryMiB      int
	VCPUs          int
	Kernel, Initrd string
	// TSCkHz is the host TSC frequency, passed as tsc_early_khz so the
	// guest skips TSC calibration (slow and unreliable under TCG).
	TSCkHz int
	// ExtraCmdline is appended to the kernel command line.
	ExtraCmdline []string
	// SharedDir is exported over virtio-fs as RootTag.
	SharedDir string
	RootTag   string
	// NICs are the guest's network interfaces, taps QEMU inherits.
	NICs []NIC
	// Shares are the host directories of bind mounts (shares.go).
	Shares []VirtiofsShare
	// Sockets and the serial console log, in the VM's state directory.
	QMPSocket, AgentSocket, VirtiofsSocket, ConsoleLog string
}

// Cmdline is the guest kernel command line.
func (c VMConfig) Cmdline() string {
	args := []string{"console=ttyS0", "quiet", "panic=-1", "reboot=t"}
	if c.TSCkHz > 0 {
		args = append(args, "tsc_early_khz="+strconv.Itoa(c.TSCkHz))
	}
	return strings.Join(append(args, c.ExtraCmdline...), " ")
}

// qopt escapes a value for a QEMU -opt list, where a comma is doubled.
func qopt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Args returns QEMU's argv (without argv[0]).
func (c VMConfig) Args() []string {
	suffix := "device" // virtio-mmio devices on microvm
	if c.Machine != "microvm" {
		suffix = "pci"
	}
	machine := c.Machine
	vhostUser := c.SharedDir != "" || len(c.Shares) > 0 // needs guest RAM shared with virtiofsd
	if vhostUser {
		machine += ",memory-backend=mem"
	}
	a := []string{
		"-name", "berth-" + c.ID,
		"-M", machine,
		"-accel", c.Accel,
	}
	if c.Accel == "kvm" {
		a = append(a, "-cpu", "host")
	}
	a = append(a,
		"-smp", strconv.Itoa(c.VCPUs),
		"-m", strconv.Itoa(c.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "file:"+c.ConsoleLog,
		"-kernel", c.Kernel,
		"-initrd", c.Initrd,
		"-append", c.Cmdline(),
		"-qmp", "unix:"+qopt(c.QMPSocket)+",server=on,wait=off",
		"-device", "virtio-serial-"+suffix+",id=vs0",
		"-chardev", "socket,id=agent,path="+qopt(c.AgentSocket)+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=org.berth.agent,bus=vs0.0",
	)
	if c.Machine == "microvm" {
		// Modern virtio-mmio: libvhost-user (virtiofsd) refuses legacy devices.
		a = append(a, "-global", "virtio-mmio.force-legacy=false")
	}
	for _, n := range c.NICs {
		a = append(a,
			"-netdev", fmt.Sprintf("tap,id=%s,fd=%d", n.ID, n.FD),
			"-device", fmt.Sprintf("virtio-net-%s,netdev=%s,mac=%s", suffix, n.ID, n.MAC),
		)
	}
	if vhostUser {
		a = append(a, "-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", c.MemoryMiB))
	}
	if c.SharedDir != "" {
		a = append(a,
			"-chardev", "socket,id=vfs,path="+qopt(c.VirtiofsSocket),
			"-device", "vhost-user-fs-"+suffix+",chardev=vfs,tag="+qopt(c.RootTag),
		)
	}
	return append(a, c.shareArgs(suffix)...)
}

// VirtiofsdArgs returns virtiofsd's argv (without argv[0]).
func (c VMConfig) VirtiofsdArgs() []string { return virtiofsdArgs(c.VirtiofsSocket, c.SharedDir) }
