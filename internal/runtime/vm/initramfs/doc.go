// Package initramfs builds the initramfs berth's microVMs boot: berth-agent
// as /init plus the kernel modules it loads, in the kernel's "newc" cpio
// format, cached under a name derived from its inputs.
//
// The newc writer is the few dozen lines below rather than a dependency: the
// cpio libraries on the module proxy are either unmaintained since 2021
// (cavaliergopher/cpio) or part of a very large module (u-root), and berth
// only ever writes regular files, directories and one device node.
package initramfs
