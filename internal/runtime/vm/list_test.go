package vm

import (
	"context"
	"os"
	"slices"
	"testing"
)

// List finds VMs by the ID in their state, not by their (hashed) dir names.
func TestList(t *testing.T) {
	r, err := New(WithStateDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	long := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, id := range []string{long, "short"} {
		dir := r.Dir(id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := writeState(dir, stateFile{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(r.Dir("nostate"), 0o700); err != nil {
		t.Fatal(err)
	}
	ids, err := r.List(context.Background())
	slices.Sort(ids)
	if err != nil || !slices.Equal(ids, []string{long, "short"}) {
		t.Fatalf("List = %v, %v", ids, err)
	}
}
