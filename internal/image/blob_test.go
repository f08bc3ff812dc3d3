package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berthdev/berth/internal/errdefs"
)

// A staged file in the store's scratch space is linked into place, not
// copied, and still verified; a file from elsewhere is copied.
func TestPutBlobLinksStagedFiles(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := []byte("staged layer bytes")
	sum := sha256.Sum256(data)
	h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	ino := func(p string) uint64 {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Sys().(*syscall.Stat_t).Ino
	}
	put := func(path string, h v1.Hash) error {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return s.putBlob(ctx, h, int64(len(data)), f)
	}

	bad := v1.Hash{Algorithm: "sha256", Hex: hex64("2")}
	if err := put(filepath.Join(s.tmpDir(), "bad"), bad); !errors.Is(err, errdefs.ErrCorrupt) {
		t.Fatalf("staged file with the wrong digest: %v, want ErrCorrupt", err)
	}
	if s.hasBlob(bad) {
		t.Fatal("a blob with the wrong digest entered the store")
	}

	staged := filepath.Join(s.tmpDir(), "staged")
	if err := put(staged, h); err != nil {
		t.Fatal(err)
	}
	if ino(staged) != ino(s.blobPath(h)) {
		t.Fatal("staged file was copied, not linked")
	}

	outside := filepath.Join(t.TempDir(), "user-file")
	other := []byte("another blob")
	data = other
	sum = sha256.Sum256(other)
	h2 := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if err := put(outside, h2); err != nil {
		t.Fatal(err)
	}
	if ino(outside) == ino(s.blobPath(h2)) {
		t.Fatal("a file from outside the store was linked into it")
	}
}
