package vm

import (
	"slices"
	"strings"
	"testing"
)

func testVMConfig() VMConfig {
	return VMConfig{
		ID: "c1", QEMU: "qemu-system-x86_64", Machine: "microvm", Accel: "tcg",
		MemoryMiB: 256, VCPUs: 2, Kernel: "/k/vmlinuz", Initrd: "/c/i.cpio", TSCkHz: 2596138,
		SharedDir: "/var/lib/c1/rootfs", RootTag: "rootfs",
		QMPSocket: "/run/vm/c1/qmp.sock", AgentSocket: "/run/vm/c1/agent.sock",
		VirtiofsSocket: "/run/vm/c1/vfs.sock", ConsoleLog: "/run/vm/c1/console.log",
	}
}

// after returns the argument following flag's n-th occurrence whose value starts with prefix.
func flagValue(args []string, flag, prefix string) (string, bool) {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && strings.HasPrefix(args[i+1], prefix) {
			return args[i+1], true
		}
	}
	return "", false
}

func TestArgs(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*VMConfig)
		want    map[string]string // flag → exact value (matched by prefix up to first ',' or '=')
		absent  []string
		present []string
	}{
		{
			name: "microvm tcg virtiofs",
			want: map[string]string{
				"-M":      "microvm,memory-backend=mem",
				"-accel":  "tcg",
				"-m":      "256",
				"-smp":    "2",
				"-object": "memory-backend-memfd,id=mem,size=256M,share=on",
				"-global": "virtio-mmio.force-legacy=false",
				"-serial": "file:/run/vm/c1/console.log",
				"-name":   "berth-c1",
			},
			present: []string{"virtio-serial-device,id=vs0", "vhost-user-fs-device,chardev=vfs,tag=rootfs", "-no-reboot", "-nodefaults"},
			absent:  []string{"-cpu"},
		},
		{
			name:    "q35 kvm",
			edit:    func(c *VMConfig) { c.Machine = "q35"; c.Accel = "kvm" },
			want:    map[string]string{"-M": "q35,memory-backend=mem", "-cpu": "host"},
			present: []string{"virtio-serial-pci,id=vs0", "vhost-user-fs-pci,chardev=vfs,tag=rootfs"},
			absent:  []string{"-global"},
		},
		{
			name:    "no shared dir",
			edit:    func(c *VMConfig) { c.SharedDir = "" },
			want:    map[string]string{"-M": "microvm"},
			absent:  []string{"-object"},
			present: []string{"virtserialport,chardev=agent,name=org.berth.agent,bus=vs0.0"},
		},
		{
			name: "microvm NICs",
			edit: func(c *VMConfig) {
				c.NICs = []NIC{{ID: "net0", MAC: "0a:58:0a:58:00:05", FD: 3}, {ID: "net1", MAC: "0a:58:0a:59:00:07", FD: 4}}
			},
			present: []string{
				"tap,id=net0,fd=3", "virtio-net-device,netdev=net0,mac=0a:58:0a:58:00:05",
				"tap,id=net1,fd=4", "virtio-net-device,netdev=net1,mac=0a:58:0a:59:00:07",
			},
		},
		{
			name:    "q35 NIC",
			edit:    func(c *VMConfig) { c.Machine = "q35"; c.NICs = []NIC{{ID: "net0", MAC: "0a:58:0a:58:00:05", FD: 3}} },
			present: []string{"tap,id=net0,fd=3", "virtio-net-pci,netdev=net0,mac=0a:58:0a:58:00:05"},
		},
		{
			name:   "no NICs",
			absent: []string{"-netdev"},
		},
		{
			name: "commas escaped",
			edit: func(c *VMConfig) { c.AgentSocket = "/run/a,b/agent.sock" },
			want: map[string]string{"-chardev": "socket,id=agent,path=/run/a,,b/agent.sock,server=on,wait=off"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testVMConfig()
			if tt.edit != nil {
				tt.edit(&c)
			}
			args := c.Args()
			for flag, want := range tt.want {
				p, _, _ := strings.Cut(want, ",")
				p, _, _ = strings.Cut(p, "=")
				if got, ok := flagValue(args, flag, p); !ok || got != want {
					t.Errorf("%s = %q, want %q\nargv: %q", flag, got, want, args)
				}
			}
			for _, a := range tt.present {
				if !slices.Contains(args, a) {
					t.Errorf("argv lacks %q: %q", a, args)
				}
			}
			for _, a := range tt.absent {
				if slices.Contains(args, a) {
					t.Errorf("argv has %q: %q", a, args)
				}
			}
		})
	}
}

func TestCmdline(t *testing.T) {
	c := testVMConfig()
	c.ExtraCmdline = []string{"berth.probe"}
	got := c.Cmdline()
	for _, want := range []string{"console=ttyS0", "panic=-1", "tsc_early_khz=2596138", "berth.probe"} {
		if !strings.Contains(got, want) {
			t.Errorf("cmdline %q lacks %q", got, want)
		}
	}
}

func TestVirtiofsdArgs(t *testing.T) {
	got := testVMConfig().VirtiofsdArgs()
	want := []string{"--socket-path=/run/vm/c1/vfs.sock", "-o", "source=/var/lib/c1/rootfs"}
	if !slices.Equal(got[:3], want) {
		t.Fatalf("virtiofsd args = %q, want prefix %q", got, want)
	}
}
