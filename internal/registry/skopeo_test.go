package registry_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/berthdev/berth/internal/registry"
)

// skopeo runs skopeo with a permissive policy, or skips the test without it.
func skopeo(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("skopeo")
	if err != nil {
		t.Skip("skopeo not installed: interop with another client is not tested")
	}
	if testing.Short() {
		t.Skip("skopeo interop skipped in -short mode")
	}
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), bin, append([]string{"--policy", policy}, args...)...)
	cmd.Env = append(os.Environ(), "REGISTRY_AUTH_FILE="+filepath.Join(t.TempDir(), "auth.json"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo %v: %v\n%s", args, err, out)
	}
}

func TestSkopeoInterop(t *testing.T) {
	ctx := t.Context()
	dockerConfig(t, "")
	reg := newTestRegistry(t, regOpts{})
	img := busyboxImage(t)
	want := digestOf(t, img)

	// berth push → skopeo copy to an OCI layout.
	if _, err := registry.Push(ctx, reg.ref("interop/bb:1"), img); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "oci")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+reg.ref("interop/bb:1"), "oci:"+dir+":bb")
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("skopeo layout index: %v, %v", im, err)
	}
	// skopeo may convert the Docker media types; the layers must survive.
	copied, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	wantLayers, _ := img.Layers()
	gotLayers, _ := copied.Layers()
	if len(gotLayers) != len(wantLayers) || digestOf2(t, gotLayers[0]) != digestOf2(t, wantLayers[0]) {
		t.Fatalf("skopeo copy changed the layers")
	}

	// skopeo copy from the layout to the registry → berth pull.
	skopeo(t, "copy", "--dest-tls-verify=false", "oci:"+dir+":bb", "docker://"+reg.ref("interop/back:1"))
	st := newLayoutStore(t)
	res, err := registry.Pull(ctx, reg.ref("interop/back:1"), st)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Digest != im.Manifests[0].Digest {
		t.Fatalf("pulled %s, skopeo pushed %s (original %s)", res[0].Digest, im.Manifests[0].Digest, want)
	}
}
