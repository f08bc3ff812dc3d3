package guest

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berthdev/berth/internal/runtime/vm/agentproto"
)

func TestMountPlan(t *testing.T) {
	s := agentproto.Setup{
		Mounts: []agentproto.Mount{{Destination: "/proc"}, {Destination: "/data"}, {Destination: "/tmp"}},
		Shares: []agentproto.Share{
			{Destination: "/etc/hosts", Before: 0},
			{Destination: "/data/sub", Before: 2},
			{Destination: "/last", Before: 3},
			{Destination: "/data/sub2", Before: 2},
			{Destination: "/clamped", Before: 99},
		},
	}
	var got []string
	for _, st := range mountPlan(s) {
		if st.share != nil {
			got = append(got, "bind "+st.share.Destination)
		} else {
			got = append(got, st.mount.Destination)
		}
	}
	want := []string{"bind /etc/hosts", "/proc", "/data", "bind /data/sub", "bind /data/sub2", "/tmp", "bind /last", "bind /clamped"}
	if len(got) != len(want) {
		t.Fatalf("plan = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("plan = %q, want %q", got, want)
		}
	}
}

func TestBindFlags(t *testing.T) {
	for _, tt := range []struct {
		s    agentproto.Share
		want uintptr
	}{
		{agentproto.Share{}, 0},
		{agentproto.Share{ReadOnly: true}, unix.MS_RDONLY},
		{agentproto.Share{ReadOnly: true, Options: []string{"rw", "nosuid", "nodev", "z"}}, unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV},
		{agentproto.Share{Options: []string{"noexec", "exec"}}, 0},
	} {
		if got := bindFlags(tt.s); got != tt.want {
			t.Errorf("bindFlags(%+v) = %#x, want %#x", tt.s, got, tt.want)
		}
	}
}
