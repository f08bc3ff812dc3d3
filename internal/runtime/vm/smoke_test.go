package vm

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/berthdev/berth/internal/runtime"
)

func TestSmoke(t *testing.T) {
	requiresVM(t)
	r := newTestRuntime(t, WithAccel("tcg"))
	rootfs := t.TempDir()
	makeRootfs(t, rootfs)
	bundle := makeBundle(t, rootfs, []string{"sh", "-c", "echo hello; uname -r; exit 3"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out syncBuffer
	start := time.Now()
	p, err := r.Create(ctx, "smoke", bundle, runtime.IO{Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("create: %s", time.Since(start))
	defer r.Delete(ctx, "smoke", true)
	if err := r.Start(ctx, "smoke"); err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait(ctx)
	t.Logf("total: %s; status %+v err %v; out %q", time.Since(start), st, err, out.String())
	if err != nil || st.Code != 3 || !strings.Contains(out.String(), "hello") {
		t.Fatal("bad")
	}
}
