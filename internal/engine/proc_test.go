package engine

import (
	"os"
	"os/exec"
	"testing"
)

func TestAliveTracksStartTime(t *testing.T) {
	st, err := procStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !alive(os.Getpid(), st) {
		t.Fatal("this process reported dead")
	}
	if alive(os.Getpid(), st+1) {
		t.Fatal("a different start time must read as another process")
	}
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if alive(cmd.Process.Pid, 0) {
		t.Fatal("an exited and reaped process reported alive")
	}
}
