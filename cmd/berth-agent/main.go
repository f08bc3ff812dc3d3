// Command berth-agent is the PID 1 of berth's microVMs; see package guest.
// Build it static: CGO_ENABLED=0 go build ./cmd/berth-agent.
package main

import "github.com/berthdev/berth/internal/runtime/vm/guest"

func main() { guest.Main() }
