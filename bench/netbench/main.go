// Command netbench is bench/net.sh's HTTP load generator when wrk is not
// installed: C keep-alive clients GET one URL for D and it prints one JSON
// line with requests per second, latency percentiles and errors.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

type result struct {
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	RPS       float64 `json:"rps"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	MBPerSec  float64 `json:"mb_per_s"`
	FirstErr  string  `json:"first_error,omitempty"`
	Duration  float64 `json:"duration_s"`
	Clients   int     `json:"clients"`
	TargetURL string  `json:"url"`
}

func main() {
	url := flag.String("url", "", "URL to GET")
	clients := flag.Int("c", 4, "concurrent clients")
	dur := flag.Duration("d", 10*time.Second, "duration")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "usage: netbench -url URL [-c N] [-d 10s]")
		os.Exit(2)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: *clients, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var mu sync.Mutex
	var lat []time.Duration
	var errs, bytes int
	var firstErr string
	deadline := time.Now().Add(*dur)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			var myErrs, myBytes int
			var myFirst string
			for time.Now().Before(deadline) {
				t0 := time.Now()
				resp, err := client.Get(*url)
				n := int64(0)
				if err == nil {
					n, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					myErrs++
					if myFirst == "" {
						myFirst = err.Error()
					}
					continue
				}
				mine = append(mine, time.Since(t0))
				myBytes += int(n)
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += myErrs
			bytes += myBytes
			if firstErr == "" {
				firstErr = myFirst
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	r := result{Requests: len(lat), Errors: errs, RPS: float64(len(lat)) / elapsed, P50ms: pct(0.50), P99ms: pct(0.99),
		MBPerSec: float64(bytes) / elapsed / 1e6, FirstErr: firstErr, Duration: elapsed, Clients: *clients, TargetURL: *url}
	_ = json.NewEncoder(os.Stdout).Encode(r)
}
