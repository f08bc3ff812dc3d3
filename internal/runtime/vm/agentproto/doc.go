// Package agentproto is the wire protocol between berth's microVM backend on
// the host and berth-agent, the guest's PID 1, spoken over one virtio-serial
// port (and, unchanged, over the backend's per-VM control socket).
//
// # Framing
//
// Every message is a frame:
//
//	+--------+-----------------+-----------------+-------------+
//	| type   | id (uint32, BE) | len (uint32, BE)| payload     |
//	| 1 byte | 4 bytes         | 4 bytes         | len bytes   |
//	+--------+-----------------+-----------------+-------------+
//
// id names a process inside the guest: 1 is the workload's init, the host
// picks fresh ids for execs, and 0 addresses the agent itself. Payloads are
// raw bytes for stream data and JSON for control messages. A payload is at
// most MaxPayload bytes.
//
// # Conversation
//
//	host                                   agent
//	 Setup{hostname, root tag, mounts,
//	       network, shares…}           ──▶     (id 0)
//	                                   ◀── Ready{kernel release} or Error (id 0)
//	 Start{args, env, cwd, uid…}       ──▶     (id N)
//	                                   ◀── Started{pid} or Error           (id N)
//	 Stdin data / StdinClose           ──▶     (id N)
//	 Signal{signal, all} / Resize{w,h} ──▶     (id N)
//	                                   ◀── Stdout / Stderr data           (id N)
//	                                   ◀── Exit{code, signal}             (id N)
//	 ExitAck                           ──▶     (id N)
//
// The agent sends Exit only after the process's output has been drained, so
// data frames for a process always precede its Exit. When init (id 1) exits,
// the agent kills every other process, reports their exits, waits for the
// ExitAck of init (or a few seconds) and powers the VM off.
//
// # Setup: root, kernel filesystems, shares
//
// The agent mounts the root tag (virtio-fs), moves into it, mounts the
// kernel filesystems of Mounts and binds the Shares, in the spec's order
// (a Share's Before is its place among Mounts), then makes the root
// read-only if asked. Host data comes only as Shares: each names a
// virtio-fs tag (berthshare0…), a path in it (empty: the share's root; a
// file otherwise), the destination, read-only and flag options. The agent
// mounts each tag once outside the new root, binds from it, creating the
// mount point (an empty file for a file), remounts read-only binds
// read-only (EROFS on writes), and detaches the tag's own mount, so the
// workload sees the binds only. A failed bind fails the Setup.
//
// The guest opens the port once read-write and reopens it after EOF (EOF is
// what a read returns while no host side is connected).
//
// # Network
//
// Setup.Network (net.go) lists the guest's NICs by MAC, each with the name,
// MTU and addresses of the namespace interface it mirrors, and the
// namespace's routes. Before it mounts the root, the agent finds each NIC by
// its MAC, renames it (eth0…), sets its MTU and addresses, brings it up and
// adds the routes; a NIC that does not show up within a few seconds fails
// Setup. Without Network the guest has only lo.
//
// # Control socket
//
// Only the process that created a VM holds its port. Others reach the VM
// through that owner's ctl.sock (package vm): the same framing, a request
// frame (type 100, JSON {op: start|kill|exec, …}) answered by a reply frame
// (type 101, JSON {error, class}); after an exec's reply the connection
// carries that process's Stdin/StdinClose/Signal/Resize and
// Stdout/Stderr/Exit frames with id 1.
package agentproto
