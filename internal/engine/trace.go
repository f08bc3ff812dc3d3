package engine

import (
	"fmt"
	"os"
	"time"
)

// traceOn enables phase timings on stderr (BERTH_TRACE=1), for profiling
// start-up; the monitor's stderr is monitor.log in the run dir.
var traceOn = os.Getenv("BERTH_TRACE") != ""

var traceStart = time.Now()

func trace(what string) {
	if traceOn {
		out := os.Stderr
		if p := os.Getenv("BERTH_TRACE"); len(p) > 1 {
			if f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err == nil {
				defer f.Close()
				out = f
			}
		}
		fmt.Fprintf(out, "[%d %7.2fms wall %.1fms] %s\n", os.Getpid(), float64(time.Since(traceStart).Microseconds())/1000, float64(time.Now().UnixMicro()%100000)/1000, what)
	}
}
