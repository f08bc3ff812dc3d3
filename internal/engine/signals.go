package engine

import "github.com/berthdev/berth/internal/runtime"

// ParseSignal reads a signal as Docker does: "TERM", "SIGTERM" or "15"
// (runtime.ParseSignal, re-exported for the CLI).
var ParseSignal = runtime.ParseSignal
