package oci

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthdev/berth/internal/cgroups"
	"github.com/berthdev/berth/internal/errdefs"
)

func TestProbe(t *testing.T) {
	requiresRunc(t)
	ctx := context.Background()
	cache := filepath.Join(t.TempDir(), "probe.json")
	candidates := []string{"/nonexistent/crun", "crun", "runc"}
	start := time.Now()
	chosen, reason, err := Probe(ctx, candidates, cache)
	first := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first probe (%v): %s: %s", first, chosen, reason)
	if filepath.Base(chosen) != "runc" && filepath.Base(chosen) != "crun" {
		t.Errorf("chosen %q", chosen)
	}
	if !strings.Contains(reason, "/nonexistent/crun: not installed (apt-get install crun)") {
		t.Errorf("reason %q does not explain the missing candidate", reason)
	}
	if filepath.Base(chosen) == "runc" && !strings.Contains(reason, "; crun ") && !strings.Contains(reason, "skipped crun ") {
		t.Errorf("reason %q does not explain why crun was skipped", reason)
	}

	if _, err := exec.LookPath("crun"); err == nil && cgroups.DetectMode() == cgroups.Hybrid {
		if filepath.Base(chosen) != "crun" || !strings.Contains(reason, "private mount namespace") {
			t.Errorf("hybrid host with crun: chose %q: %q", chosen, reason)
		}
	}

	var c probeCache
	b, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &c); err != nil || len(c.Candidates) == 0 || c.BootID == "" {
		t.Fatalf("cache %s: %v", b, err)
	}
	if e := c.Candidates[chosen]; !e.OK || e.Version == "" {
		t.Errorf("cache entry %+v", e)
	}

	// A second probe answers from the cache: it runs nothing.
	start = time.Now()
	chosen2, reason2, err := Probe(ctx, candidates, cache)
	second := time.Since(start)
	if err != nil || chosen2 != chosen || reason2 != reason {
		t.Errorf("cached probe: %q %q %v", chosen2, reason2, err)
	}
	t.Logf("cached probe: %v", second)
	if second > first/2 {
		t.Errorf("cached probe took %v, first %v", second, first)
	}

	// A binary whose mtime changed is probed again.
	e := c.Candidates[chosen]
	e.MTime, e.OK, e.Reason = e.MTime.Add(-time.Hour), false, "stale"
	c.Candidates[chosen] = e
	b, _ = json.Marshal(c)
	if err := os.WriteFile(cache, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if chosen3, _, err := Probe(ctx, candidates, cache); err != nil || chosen3 != chosen {
		t.Errorf("probe after mtime change: %q %v", chosen3, err)
	}
}

func TestProbeNone(t *testing.T) {
	_, reason, err := Probe(context.Background(), []string{"/nonexistent/runc"}, "")
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(reason, "apt-get install runc") {
		t.Errorf("err %v reason %q", err, reason)
	}
}
