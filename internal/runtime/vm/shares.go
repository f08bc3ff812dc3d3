package vm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/errdefs"
	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

// Host data reaches a VM over virtio-fs, like its root: every bind mount of
// the spec (named and anonymous volumes, host directories, the engine's
// /etc files) is a bind from a share.
//
//   - A directory is a share of its own (one virtiofsd, one device, tag
//     berthshareN), whatever number of binds use it. It is exported
//     read-only when every bind of it is.
//   - Files are all served by one more share: the VM's state directory
//     holds files/N, an empty placeholder for the N-th distinct file, on
//     which that share's virtiofsd, in a mount namespace of its own, has
//     bind-mounted the host file first. The guest so sees exactly the files
//     bound into it, never their siblings (a guest's root can mount any tag
//     it likes), and the host's mount table stays untouched.
//
// Read-only is enforced on the host: virtiofsd (QEMU 7.2's has no read-only
// option) starts in a private mount namespace in which its source is a
// read-only bind, so a guest that remounts its bind read-write still gets
// EROFS.

const (
	shareTagPrefix = "berthshare"
	// sharesFilesDir, in the VM's state directory, holds the placeholders
	// of the files share.
	sharesFilesDir = "files"
	// MicrovmDeviceSlots is how many virtio devices a microvm guest can
	// use. QEMU's microvm takes 24 virtio-mmio devices with its second
	// IO-APIC (on by default, with ACPI; 8 without), but with QEMU 7.2 and
	// Debian's 6.1 kernel the 24th never answers: the guest hangs on its
	// first request. 23 work (tested with 20 volumes).
	MicrovmDeviceSlots = 23
)

// VirtiofsShare is one more host directory exported to a VM over
// virtio-fs, by a virtiofsd of its own.
type VirtiofsShare struct {
	// Tag is the guest's name for it (berthshareN).
	Tag string
	// Source is the directory virtiofsd serves.
	Source string
	// Socket is virtiofsd's vhost-user socket.
	Socket string
	// Binds are made, in this order, in a mount namespace of virtiofsd's
	// own before it starts; none: it runs in the host's namespace.
	Binds []NSBind
}

// NSBind is a bind mount made in a virtiofsd's private mount namespace.
type NSBind struct {
	Source, Target string
	// Recursive binds the submounts too (MS_REC).
	Recursive bool
	// ReadOnly makes the bind (and, when Recursive, its submounts) read-only.
	ReadOnly bool
}

// VirtiofsdArgs returns the share's virtiofsd argv (without argv[0]): the
// same settings as the root's.
func (s VirtiofsShare) VirtiofsdArgs() []string { return virtiofsdArgs(s.Socket, s.Source) }

// shareArgs are QEMU's arguments for the shares: a chardev and a
// vhost-user-fs device each.
func (c VMConfig) shareArgs(suffix string) []string {
	var a []string
	for i, s := range c.Shares {
		id := "share" + strconv.Itoa(i)
		a = append(a,
			"-chardev", "socket,id="+id+",path="+qopt(s.Socket),
			"-device", "vhost-user-fs-"+suffix+",chardev="+id+",tag="+qopt(s.Tag),
		)
	}
	return a
}

// CheckDevices refuses a microvm configuration with more virtio devices
// than the machine has virtio-mmio slots (QEMU would fail with "No
// 'virtio-bus' bus found").
func (c VMConfig) CheckDevices() error {
	if c.Machine != "microvm" {
		return nil
	}
	var devices []string
	args := c.Args()
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "-device" {
			continue
		}
		driver, _, _ := strings.Cut(args[i+1], ",")
		if strings.HasSuffix(driver, "-device") { // virtio-*-device, vhost-user-*-device: one slot each
			devices = append(devices, driver)
		}
	}
	if len(devices) > MicrovmDeviceSlots {
		return fmt.Errorf("%d virtio devices (%d of them virtio-fs shares for volumes and bind mounts) but a microvm guest can use %d: bind fewer distinct directories: %w",
			len(devices), len(c.Shares), MicrovmDeviceSlots, errdefs.ErrInvalidArgument)
	}
	return nil
}

// sharePlan is how a spec's bind mounts reach a VM: the host side (one
// VirtiofsShare each) and the guest's binds.
type sharePlan struct {
	shares []VirtiofsShare
	guest  []agentproto.Share
	// files are the host files of the files share, placeholder N for files[N].
	files []string
}

// isBind says whether m is a bind mount of a host path.
func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// bindOptions splits a bind's OCI options into read-only and the flags the
// guest applies; bind, rbind and propagation mean nothing in the guest.
func bindOptions(opts []string) (ro bool, rest []string) {
	for _, o := range opts {
		switch o {
		case "ro":
			ro = true
		case "rw":
			ro = false
		case "bind", "rbind", "private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable":
		default:
			rest = append(rest, o)
		}
	}
	return ro, rest
}

// planShares groups the bind mounts of s (a bundle's spec) into shares for
// the VM whose state directory is vmDir. Relative sources are relative to
// the bundle. A source must be a directory or a regular file.
func planShares(bundle string, s *specs.Spec, vmDir string) (sharePlan, error) {
	type group struct {
		source string
		ro     bool
	}
	var dirs, files []group
	dirIdx, fileIdx := map[string]int{}, map[string]int{}
	type use struct {
		file bool
		idx  int
		g    agentproto.Share
	}
	var uses []use
	before := 0
	for _, m := range s.Mounts {
		if kernelMount(m) {
			before++
			continue
		}
		if !isBind(m) {
			continue
		}
		src := m.Source
		if !filepath.IsAbs(src) {
			src = filepath.Join(bundle, src)
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("bind mount of %s on %s: "+format, append([]any{m.Source, m.Destination}, args...)...)
		}
		if !filepath.IsAbs(m.Destination) {
			return sharePlan{}, fail("destination is not absolute: %w", errdefs.ErrInvalidArgument)
		}
		fi, err := os.Stat(src)
		if os.IsNotExist(err) {
			return sharePlan{}, fail("source does not exist: %w", errdefs.ErrNotFound)
		}
		if err != nil {
			return sharePlan{}, fail("%w", err)
		}
		real, err := filepath.EvalSymlinks(src)
		if err != nil {
			return sharePlan{}, fail("%w", err)
		}
		ro, opts := bindOptions(m.Options)
		u := use{g: agentproto.Share{Destination: filepath.Clean(m.Destination), ReadOnly: ro, Options: opts, Before: before}}
		add := func(list *[]group, idx map[string]int) int {
			i, ok := idx[real]
			if !ok {
				i = len(*list)
				idx[real] = i
				*list = append(*list, group{source: real, ro: true})
			}
			(*list)[i].ro = (*list)[i].ro && ro
			return i
		}
		switch {
		case fi.IsDir():
			u.idx = add(&dirs, dirIdx)
		case fi.Mode().IsRegular():
			u.file, u.idx = true, add(&files, fileIdx)
			u.g.Path = strconv.Itoa(u.idx)
		default:
			return sharePlan{}, fail("a %s cannot be shared with a microVM, only directories and regular files: %w", fileKind(fi.Mode()), errdefs.ErrInvalidArgument)
		}
		uses = append(uses, u)
	}
	var p sharePlan
	sock := func(i int) string { return filepath.Join(vmDir, "share"+strconv.Itoa(i)+".sock") }
	for i, d := range dirs {
		sh := VirtiofsShare{Tag: shareTagPrefix + strconv.Itoa(i), Source: d.source, Socket: sock(i)}
		if d.ro {
			sh.Binds = []NSBind{{Source: d.source, Target: d.source, Recursive: true, ReadOnly: true}}
		}
		p.shares = append(p.shares, sh)
	}
	filesTag := shareTagPrefix + strconv.Itoa(len(dirs))
	if len(files) > 0 {
		dir := filepath.Join(vmDir, sharesFilesDir)
		// The directory itself is read-only: the guest can neither add
		// files to the host's state dir nor replace the placeholders.
		sh := VirtiofsShare{Tag: filesTag, Source: dir, Socket: sock(len(dirs)), Binds: []NSBind{{Source: dir, Target: dir, ReadOnly: true}}}
		for i, f := range files {
			sh.Binds = append(sh.Binds, NSBind{Source: f.source, Target: filepath.Join(dir, strconv.Itoa(i)), ReadOnly: f.ro})
			p.files = append(p.files, f.source)
		}
		p.shares = append(p.shares, sh)
	}
	for _, u := range uses {
		u.g.Tag = shareTagPrefix + strconv.Itoa(u.idx)
		if u.file {
			u.g.Tag = filesTag
		}
		p.guest = append(p.guest, u.g)
	}
	return p, nil
}

func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeNamedPipe != 0:
		return "named pipe"
	case m&os.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// prepareShares works out the VM's shares from the bundle's bind mounts;
// it launches nothing.
func (m *Machine) prepareShares(ctx context.Context) error {
	p, err := planShares(m.bundle, m.spec, m.dir)
	if err != nil {
		return fmt.Errorf("vm %s: %w", m.ID, err)
	}
	for _, s := range p.shares {
		if l := len(s.Socket); l > 100 {
			return fmt.Errorf("vm %s: state directory %s is too long for unix sockets (%d bytes); choose a shorter state dir: %w", m.ID, m.dir, l, errdefs.ErrInvalidArgument)
		}
	}
	m.Config.Shares = p.shares
	m.shares = p
	// Checked again when QEMU starts, with every device; failing here
	// spares starting the virtiofsds.
	if err := m.Config.CheckDevices(); err != nil {
		return fmt.Errorf("vm %s: %w", m.ID, err)
	}
	return nil
}

// startShares starts one virtiofsd per share, each recorded in state.json
// as soon as it runs (so Delete finds it from any process), and waits until
// they all listen.
func (m *Machine) startShares(ctx context.Context) error {
	if len(m.shares.files) > 0 {
		dir := m.path(sharesFilesDir)
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("vm %s: %w", m.ID, err)
		}
		for i := range m.shares.files {
			if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), nil, 0o600); err != nil {
				return fmt.Errorf("vm %s: %w", m.ID, err)
			}
		}
	}
	var started []*virtiofsdProc
	for i, s := range m.Config.Shares {
		logName := "virtiofsd-share" + strconv.Itoa(i) + ".log"
		p, err := launchVirtiofsd(m.Config.Virtiofsd, s.VirtiofsdArgs(), m.path(logName), s.Binds)
		if err != nil {
			return fmt.Errorf("vm %s: start virtiofsd for %s (%s): %w", m.ID, s.Source, s.Tag, err)
		}
		started = append(started, p)
		m.mu.Lock()
		m.shareProcs = append(m.shareProcs, p)
		m.state.Shares = append(m.state.Shares, refOf(p.cmd.Process.Pid))
		m.mu.Unlock()
		if err := m.saveState(); err != nil {
			return err
		}
	}
	for i, p := range started {
		logName := "virtiofsd-share" + strconv.Itoa(i) + ".log"
		if err := m.awaitVirtiofsd(ctx, p, m.Config.Shares[i].Socket, logName); err != nil {
			return err
		}
	}
	return nil
}
