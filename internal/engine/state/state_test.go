package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berthdev/berth/internal/errdefs"
)

func TestAddGetUpdateDelete(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := &Container{ID: "abcdef0123456789", Name: "web", Created: time.Now()}
	if err := s.Add(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(ctx, &Container{ID: "ffff", Name: "web"}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate name: got %v", err)
	}
	for _, ref := range []string{"web", "abcdef0123456789", "abcd"} {
		got, err := s.Get(ctx, ref)
		if err != nil || got.ID != c.ID {
			t.Fatalf("Get(%q) = %v, %v", ref, got, err)
		}
	}
	if _, err := s.Get(ctx, "nope"); !errdefs.IsNotFound(err) {
		t.Fatalf("Get(nope) = %v", err)
	}
	if _, err := s.Update(ctx, c.ID, func(c *Container) error { c.State.Status = StatusRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Get(ctx, "web")
	if got.State.Status != StatusRunning {
		t.Fatalf("status = %q", got.State.Status)
	}
	if err := s.Delete(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "web"); !errdefs.IsNotFound(err) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestAmbiguousPrefix(t *testing.T) {
	ctx := context.Background()
	s, _ := Open(t.TempDir())
	_ = s.Add(ctx, &Container{ID: "aa11", Name: "a"})
	_ = s.Add(ctx, &Container{ID: "aa22", Name: "b"})
	if _, err := s.Get(ctx, "aa"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("ambiguous prefix: %v", err)
	}
}

// TestConcurrentWriters runs many adders and readers at once, as parallel
// berth processes would: every record must survive.
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	s, _ := Open(t.TempDir())
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(2)
		go func(i int) {
			defer wg.Done()
			if err := s.Add(ctx, &Container{ID: fmt.Sprintf("id%02d", i), Name: fmt.Sprintf("n%02d", i)}); err != nil {
				t.Error(err)
			}
		}(i)
		go func() {
			defer wg.Done()
			if _, err := s.List(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	all, err := s.List(ctx)
	if err != nil || len(all) != 20 {
		t.Fatalf("List = %d records, %v", len(all), err)
	}
}
