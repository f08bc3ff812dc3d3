// Package oci implements runtime.Runtime over an OCI runtime binary (runc
// or crun), driven through its command line as containerd's go-runc does.
//
// Create only records the bundle and IO wiring; Start runs `run --detach`
// (create and start in one invocation). Without a terminal the runtime gets
// pipe ends as its stdio, which the container's process inherits, and the
// backend copies between the pipes and the caller's IO; with a terminal the
// runtime sends the pty master over a console socket. Runtime failures are
// reported with the runtime's own message, read from its JSON log.
//
// Reaping: the backend makes the caller a child subreaper, so a container's
// init (or exec'd process) becomes the caller's child once the runtime binary
// exits, and Process.Wait collects its status with wait4 on its PID. The
// caller must therefore not reap children it did not start itself (no
// wait4(-1) loop), or statuses are lost. Signals go through a pidfd.
//
// crun on a hybrid cgroup host (v1 controllers plus a cgroup2 mount at
// /sys/fs/cgroup/unified), which crun refuses, runs in a private mount
// namespace made for each invocation without that mount, where it uses the
// v1 hierarchies (see runInV1View); runc runs as is. crun's detached
// start leaves a crun process that the caller adopts: the backend reaps it
// (see adopt.go).
//
// For a terminal, put the initial size in the spec (spec.WithConsoleSize)
// as well as in IO.Size: the backend applies IO.Size when it receives the
// master, which may be after the process has read its size. Copying from
// IO.Stdin stops at the first write after the process has ended; a Stdin
// whose Read never returns keeps one goroutine blocked in it.
package oci
