package vm

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime"
	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

func TestPlanShares(t *testing.T) {
	d := t.TempDir()
	dirA, dirB, etc := filepath.Join(d, "a"), filepath.Join(d, "b"), filepath.Join(d, "etc")
	for _, p := range []string{dirA, dirB, etc} {
		os.Mkdir(p, 0o755)
	}
	hosts, resolv := filepath.Join(etc, "hosts"), filepath.Join(etc, "resolv.conf")
	os.WriteFile(hosts, nil, 0o644)
	os.WriteFile(resolv, nil, 0o644)
	os.Symlink(dirA, filepath.Join(d, "link"))
	vmDir := "/run/vm/c1"
	bind := func(src, dst string, opts ...string) specs.Mount {
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: append([]string{"rbind", "rprivate"}, opts...)}
	}
	s := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		bind(hosts, "/etc/hosts"),
		bind(dirA, "/data"),
		{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs"},
		bind(dirA, "/data-ro", "ro"),
		bind(dirB, "/b", "ro", "nosuid"),
		bind(resolv, "/etc/resolv.conf", "ro"),
		bind(hosts, "/etc/hosts2", "ro"),
		{Destination: "/link", Type: "none", Source: filepath.Join(d, "link"), Options: []string{"bind"}},
		{Destination: "/ignored", Type: "overlay", Source: "overlay"},
	}}
	p, err := planShares("/bundle", s, vmDir)
	if err != nil {
		t.Fatal(err)
	}
	files := filepath.Join(vmDir, "files")
	want := []VirtiofsShare{
		{Tag: "berthshare0", Source: dirA, Socket: vmDir + "/share0.sock"},
		{Tag: "berthshare1", Source: dirB, Socket: vmDir + "/share1.sock", Binds: []NSBind{{Source: dirB, Target: dirB, Recursive: true, ReadOnly: true}}},
		{Tag: "berthshare2", Source: files, Socket: vmDir + "/share2.sock", Binds: []NSBind{
			{Source: files, Target: files, ReadOnly: true},
			{Source: hosts, Target: files + "/0"},
			{Source: resolv, Target: files + "/1", ReadOnly: true},
		}},
	}
	if len(p.shares) != len(want) {
		t.Fatalf("shares = %+v, want %+v", p.shares, want)
	}
	for i := range want {
		if got := p.shares[i]; got.Tag != want[i].Tag || got.Source != want[i].Source || got.Socket != want[i].Socket || !slices.Equal(got.Binds, want[i].Binds) {
			t.Errorf("share %d = %+v, want %+v", i, got, want[i])
		}
	}
	if !slices.Equal(p.files, []string{hosts, resolv}) {
		t.Errorf("files = %q", p.files)
	}
	wantGuest := []agentproto.Share{
		{Tag: "berthshare2", Path: "0", Destination: "/etc/hosts", Before: 1},
		{Tag: "berthshare0", Destination: "/data", Before: 1},
		{Tag: "berthshare0", Destination: "/data-ro", ReadOnly: true, Before: 2},
		{Tag: "berthshare1", Destination: "/b", ReadOnly: true, Options: []string{"nosuid"}, Before: 2},
		{Tag: "berthshare2", Path: "1", Destination: "/etc/resolv.conf", ReadOnly: true, Before: 2},
		{Tag: "berthshare2", Path: "0", Destination: "/etc/hosts2", ReadOnly: true, Before: 2},
		{Tag: "berthshare0", Destination: "/link", Before: 2},
	}
	if len(p.guest) != len(wantGuest) {
		t.Fatalf("guest binds = %+v", p.guest)
	}
	for i, w := range wantGuest {
		g := p.guest[i]
		if g.Tag != w.Tag || g.Path != w.Path || g.Destination != w.Destination || g.ReadOnly != w.ReadOnly || g.Before != w.Before || !slices.Equal(g.Options, w.Options) {
			t.Errorf("guest bind %d = %+v, want %+v", i, g, w)
		}
	}
	// The Before indexes match guestSetup's Mounts.
	if set := guestSetup(&specs.Spec{Root: &specs.Root{Path: "r"}, Mounts: s.Mounts}, "root"); len(set.Mounts) != 2 || set.Mounts[1].Destination != "/scratch" {
		t.Errorf("guestSetup mounts = %+v", set.Mounts)
	}

	// No binds, no shares.
	if p, err := planShares("/bundle", &specs.Spec{}, vmDir); err != nil || len(p.shares)+len(p.guest) != 0 {
		t.Errorf("no binds: %+v, %v", p, err)
	}
	// A relative source is relative to the bundle.
	if p, err := planShares(d, &specs.Spec{Mounts: []specs.Mount{bind("a", "/x")}}, vmDir); err != nil || p.shares[0].Source != dirA {
		t.Errorf("relative source: %+v, %v", p, err)
	}
}

func TestPlanSharesRefuses(t *testing.T) {
	d := t.TempDir()
	l, err := net.Listen("unix", filepath.Join(d, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for name, tt := range map[string]struct {
		m    specs.Mount
		want error
	}{
		"missing source": {specs.Mount{Destination: "/x", Type: "bind", Source: filepath.Join(d, "nope")}, errdefs.ErrNotFound},
		"socket":         {specs.Mount{Destination: "/x", Type: "bind", Source: filepath.Join(d, "sock")}, errdefs.ErrInvalidArgument},
		"relative dest":  {specs.Mount{Destination: "x", Type: "bind", Source: d}, errdefs.ErrInvalidArgument},
	} {
		_, err := planShares("/bundle", &specs.Spec{Mounts: []specs.Mount{tt.m}}, "/run/vm/c1")
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tt.want)
		}
	}
}

func TestShareArgs(t *testing.T) {
	c := testVMConfig()
	c.Shares = []VirtiofsShare{
		{Tag: "berthshare0", Source: "/v/a", Socket: "/run/vm/c1/share0.sock"},
		{Tag: "berthshare1", Source: "/v/b", Socket: "/run/vm/c1/share1.sock"},
	}
	args := strings.Join(c.Args(), " ")
	for _, want := range []string{
		"-chardev socket,id=vfs,path=/run/vm/c1/vfs.sock -device vhost-user-fs-device,chardev=vfs,tag=rootfs",
		"-chardev socket,id=share0,path=/run/vm/c1/share0.sock -device vhost-user-fs-device,chardev=share0,tag=berthshare0",
		"-chardev socket,id=share1,path=/run/vm/c1/share1.sock -device vhost-user-fs-device,chardev=share1,tag=berthshare1",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("argv lacks %q:\n%s", want, args)
		}
	}
	// Shares alone still need guest RAM virtiofsd can map.
	c.SharedDir = ""
	args = strings.Join(c.Args(), " ")
	if !strings.Contains(args, "-M microvm,memory-backend=mem") || !strings.Contains(args, "memory-backend-memfd,id=mem,size=256M,share=on") {
		t.Errorf("shares without a shared root: %s", args)
	}
	c.Machine = "q35"
	if args := strings.Join(c.Args(), " "); !strings.Contains(args, "vhost-user-fs-pci,chardev=share1,tag=berthshare1") {
		t.Errorf("q35: %s", args)
	}
	got := c.Shares[1].VirtiofsdArgs()
	if want := []string{"--socket-path=/run/vm/c1/share1.sock", "-o", "source=/v/b"}; !slices.Equal(got[:3], want) {
		t.Errorf("virtiofsd args = %q, want prefix %q", got, want)
	}
	if root := testVMConfig().VirtiofsdArgs(); !slices.Equal(got[3:], root[3:]) {
		t.Errorf("share virtiofsd settings %q differ from the root's %q", got[3:], root[3:])
	}
}

func TestCheckDevices(t *testing.T) {
	c := testVMConfig() // agent port + root: 2 slots
	for i := 0; i < MicrovmDeviceSlots-2; i++ {
		c.Shares = append(c.Shares, VirtiofsShare{Tag: shareTagPrefix + strconv.Itoa(i), Socket: "/s"})
	}
	if err := c.CheckDevices(); err != nil {
		t.Fatalf("%d devices: %v", MicrovmDeviceSlots, err)
	}
	c.Shares = append(c.Shares, VirtiofsShare{Tag: "one-too-many", Socket: "/s"})
	if err := c.CheckDevices(); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "22 of them virtio-fs shares") {
		t.Fatalf("%d devices: %v", MicrovmDeviceSlots+1, err)
	}
	c.Machine = "q35"
	if err := c.CheckDevices(); err != nil {
		t.Fatalf("q35: %v", err)
	}
}

// TestTooManyShares: Create refuses more shares than microvm takes before
// launching anything.
func TestTooManyShares(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("needs qemu-system-x86_64 to get past the host check")
	}
	if _, err := os.Stat(filepath.Join(testKernelDir(), "modules", "virtio.ko")); err != nil {
		t.Skip("needs a guest kernel (hack/fetch-kernel.sh)")
	}
	rootfs, host := t.TempDir(), t.TempDir()
	bundle := makeBundle(t, rootfs, []string{"true"}, func(s *specs.Spec) {
		for i := 0; i < MicrovmDeviceSlots; i++ {
			d := filepath.Join(host, strconv.Itoa(i))
			os.Mkdir(d, 0o755)
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/v" + strconv.Itoa(i), Type: "bind", Source: d, Options: []string{"rbind"}})
		}
	})
	r, err := New(WithStateDir(t.TempDir()), WithAgent("/bin/true"), WithKernelDir(testKernelDir()))
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Create(context.Background(), "toomany", bundle, runtime.IO{})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "bind fewer distinct directories") {
		t.Fatalf("Create = %v, want invalid argument", err)
	}
	if _, err := os.Stat(r.Dir("toomany")); !os.IsNotExist(err) {
		t.Errorf("state dir made: %v", err)
	}
}

// TestShareHandlers: shares are planned during validation (nothing
// launched) and started after the root's virtiofsd, before QEMU.
func TestShareHandlers(t *testing.T) {
	h := defaultHandlers()
	if !slices.Contains(h.Validation.Names(), PrepareSharesHandler) {
		t.Errorf("validation %v lacks %s", h.Validation.Names(), PrepareSharesHandler)
	}
	boot := h.Boot.Names()
	i := slices.Index(boot, SharesHandler)
	if i < 1 || i < slices.Index(boot, VirtiofsdHandler) || i > slices.Index(boot, QEMUHandler) {
		t.Errorf("boot order %v: want %s between %s and %s", boot, SharesHandler, VirtiofsdHandler, QEMUHandler)
	}
}
