package vm

import (
	"runtime"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestResources(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	tests := []struct {
		name       string
		res        *specs.LinuxResources
		mem, vcpus int
	}{
		{"none", nil, 256, 1},
		{"memory", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(512<<20 + 1)}}, 513, 1},
		{"memory below minimum", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(16 << 20)}}, MinMemoryMiB, 1},
		{"cpu 1.5 rounds up", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(150000), Period: u64(100000)}}, 256, min(2, runtime.NumCPU())},
		{"cpu default period", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(50000)}}, 256, 1},
		{"cpu capped", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(1000 * 100000)}}, 256, runtime.NumCPU()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &specs.Spec{Linux: &specs.Linux{Resources: tt.res}}
			mem, vcpus := resources(s, 256)
			if mem != tt.mem || vcpus != tt.vcpus {
				t.Fatalf("resources = %d MiB, %d vCPUs; want %d, %d", mem, vcpus, tt.mem, tt.vcpus)
			}
		})
	}
}

func TestGuestSetupFiltersMounts(t *testing.T) {
	pids := int64(20)
	s := &specs.Spec{
		Hostname: "h", Root: &specs.Root{Path: "rootfs", Readonly: true},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/x/hosts", Options: []string{"rbind"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}},
		},
		Linux: &specs.Linux{Resources: &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &pids}}},
	}
	set := guestSetup(s, "rootfs")
	if set.Hostname != "h" || !set.RootReadonly || set.PidsLimit != 20 || len(set.Mounts) != 2 || set.Mounts[1].Destination != "/tmp" {
		t.Fatalf("setup = %+v", set)
	}
}
