package network

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DeleteBridge takes a bridge down and deletes it; a missing bridge is not
// an error. (The bridge plugin creates bridges but never removes them.)
func DeleteBridge(name string) error {
	if len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("bridge name %q too long", name)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("bridge %s: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() &^ unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("take bridge %s down: %w", name, err)
	}
	var buf [unix.IFNAMSIZ]byte
	copy(buf[:], name)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCBRDELBR, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 && errno != unix.ENXIO && errno != unix.ENODEV {
		return fmt.Errorf("delete bridge %s: %w", name, errno)
	}
	return nil
}
