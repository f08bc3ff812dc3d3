package vm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berthdev/berth/internal/runtime"
)

// TestVMShares boots one VM with directory and file binds, read-write and
// read-only, on a read-only root, and checks what the guest can do with
// them; then another Runtime deletes it and every virtiofsd must be gone.
func TestVMShares(t *testing.T) {
	requiresVM(t)
	r := newTestRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	rootfs := t.TempDir()
	makeRootfs(t, rootfs)
	host := t.TempDir()
	rw, ro, etc := filepath.Join(host, "rw"), filepath.Join(host, "ro"), filepath.Join(host, "etc")
	for _, d := range []string{rw, ro, etc} {
		os.Mkdir(d, 0o755)
	}
	os.WriteFile(filepath.Join(rw, "in"), []byte("from host\n"), 0o644)
	os.WriteFile(filepath.Join(ro, "keep"), []byte("keep\n"), 0o644)
	conf := filepath.Join(etc, "conf")
	os.WriteFile(conf, []byte("conf\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "secret"), []byte("secret\n"), 0o600)

	id := fmt.Sprintf("vmshares%d", os.Getpid())
	t.Cleanup(func() {
		r.Delete(context.Background(), id, true)
		if l := leftovers(id); len(l) > 0 {
			t.Errorf("processes left running:\n%s", strings.Join(l, "\n"))
		}
	})
	bind := func(src, dst string, opts ...string) specs.Mount {
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: append([]string{"rbind", "rprivate"}, opts...)}
	}
	bundle := makeBundle(t, rootfs, []string{"sleep", "1000"}, func(s *specs.Spec) {
		s.Root.Readonly = true
		s.Mounts = append(s.Mounts,
			bind(rw, "/data"),
			specs.Mount{Destination: "/data/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}},
			bind(rw, "/new/dir"), // mount point made on the read-only root
			bind(ro, "/ro", "ro"),
			bind(conf, "/etc/conf"),
			bind(conf, "/new/conf-ro", "ro"),
		)
	})
	p, err := r.Create(ctx, id, bundle, runtime.IO{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	sh := func(script string) string {
		t.Helper()
		_, out, errs := execOut(ctx, t, r, id, &specs.Process{Args: []string{"sh", "-c", script}}, runtime.IO{})
		return out + errs
	}

	t.Run("directory binds", func(t *testing.T) {
		out := sh(`cat /data/in /new/dir/in; echo vm > /data/out; echo t > /data/tmp/f; grep -E ' /data/tmp ' /proc/mounts`)
		if !strings.HasPrefix(out, "from host\nfrom host\n") || !strings.Contains(out, "tmpfs /data/tmp tmpfs") {
			t.Errorf("guest: %q", out)
		}
		if b, _ := os.ReadFile(filepath.Join(rw, "out")); string(b) != "vm\n" {
			t.Errorf("the guest's write reached the host as %q", b)
		}
		if _, err := os.Stat(filepath.Join(rw, "tmp", "f")); err == nil {
			t.Error("a write to the tmpfs inside the bind reached the host")
		}
	})

	t.Run("read-only", func(t *testing.T) {
		out := sh(`cat /ro/keep; touch /ro/x; touch /rootfile; echo x > /new/conf-ro; ` +
			`mount -o remount,rw /ro && touch /ro/y; echo done`)
		// The remount works in the guest, the host still refuses: four EROFS.
		if !strings.HasPrefix(out, "keep\ndone\n") || strings.Count(out, "Read-only file system") != 4 {
			t.Errorf("guest: %q (want four EROFS)", out)
		}
		for _, p := range []string{filepath.Join(ro, "x"), filepath.Join(ro, "y"), filepath.Join(rootfs, "rootfile")} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s was written", p)
			}
		}
	})

	t.Run("file binds expose the file only", func(t *testing.T) {
		out := sh(`cat /etc/conf /new/conf-ro; echo more >> /etc/conf; ` +
			`cd /tmp/scratch; for tag in berthshare0 berthshare1 berthshare2; do mkdir $tag; mount -t virtiofs $tag $tag || echo FAIL; done; ` +
			`ls -R; grep -r secret .; echo > berthshare2/new; echo end`)
		if !strings.HasPrefix(out, "conf\nconf\n") || strings.Contains(out, "secret") || strings.Contains(out, "FAIL") ||
			!strings.Contains(out, "berthshare2:\n0\n1\n") || !strings.Contains(out, "berthshare2/new: Read-only file system") {
			t.Errorf("guest: %q", out)
		}
		if b, _ := os.ReadFile(conf); string(b) != "conf\nmore\n" {
			t.Errorf("host file after the guest's append: %q", b)
		}
		if b, _ := os.ReadFile("/etc/hosts"); len(b) == 0 {
			t.Error("the host's /etc/hosts (bound read-only) is empty")
		}
	})

	st, err := readState(r.Dir(id), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Shares) != 3 {
		t.Fatalf("state.json records %d share virtiofsds, want 3 (rw, ro, files)", len(st.Shares))
	}
	for _, ref := range st.Shares {
		if !ref.alive() {
			t.Errorf("share virtiofsd %d is not running", ref.Pid)
		}
	}
	// Another process (another Runtime) deletes the VM from state.json.
	r2, err := New(WithStateDir(filepath.Dir(r.Dir(id))), WithCacheDir(testCacheDir()), WithKernelDir(testKernelDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Delete(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	for _, ref := range append(st.Shares, st.Virtiofsd, st.QEMU) {
		if ref.alive() {
			t.Errorf("process %d still runs after Delete", ref.Pid)
		}
	}
	p.Wait(ctx)
	if _, err := os.Stat(filepath.Join(host, "etc", "secret")); err != nil {
		t.Error(err)
	}
}
