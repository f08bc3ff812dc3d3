// Command mkinitrd writes the microVM benchmark's floor initramfs: a newc
// archive holding busybox-static and an /init shell script. Usage:
//
//	mkinitrd OUT.cpio 'SHELL COMMANDS'
//
// It exists because Debian's minimal image has no cpio(1); it reuses
// berth's own newc writer.
package main

import (
	"fmt"
	"io/fs"
	"os"

	"github.com/berthdev/berth/internal/runtime/vm/initramfs"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mkinitrd OUT.cpio 'SHELL COMMANDS'")
		os.Exit(2)
	}
	if err := write(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "mkinitrd:", err)
		os.Exit(1)
	}
}

func write(out, script string) error {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("read busybox-static: %w", err)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := initramfs.NewWriter(f)
	for _, e := range []initramfs.Entry{
		{Name: "bin", Mode: fs.ModeDir | 0o755},
		{Name: "bin/busybox", Mode: 0o755, Data: bb},
		{Name: "init", Mode: 0o755, Data: []byte("#!/bin/busybox sh\n" + script + "\n")},
	} {
		if err := w.Add(e); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Close()
}
