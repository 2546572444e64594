package proxy

import (
	"runtime"
	"runtime/debug"
	"time"
)

// After a mass disconnect the gateway gives the memory of the closed
// tunnels back to the OS. Go frees heap to the OS only after a GC, and then
// gradually; an idle gateway may not collect for two minutes, so after
// thousands of tunnels close at once (a deploy of the upstream, a client
// fleet moving elsewhere) its RSS would stay at the peak. nginx frees a
// connection's pools when it closes; this is the closest Go gets.
const (
	// releaseMinDrop tunnels must have ended, and the live count be at
	// most half its peak, before memory is released: ordinary churn never
	// pays for a forced GC.
	releaseMinDrop = 1000
	// releaseDelay lets the rest of a disconnect wave end first, so one
	// release covers it.
	releaseDelay = time.Second
	// releaseEvery bounds the forced collections.
	releaseEvery = 10 * time.Second
)

// memoryReleaser watches the live tunnel count. Its methods are called with
// Gateway.mu held.
type memoryReleaser struct {
	peak int       // most live tunnels since the last release
	last time.Time // of the last release
}

// tunnelsNow records the live tunnel count after a change.
func (m *memoryReleaser) tunnelsNow(live int) {
	if live > m.peak {
		m.peak = live
		return
	}
	if m.peak-live < releaseMinDrop || live > m.peak/2 || time.Since(m.last) < releaseEvery {
		return
	}
	time.AfterFunc(releaseDelay, releaseMemory)
	m.peak, m.last = live, time.Now()
}

// releaseMemory collects twice, as objects in sync.Pools (fasthttp's
// request contexts and buffers, the relay's pending buffers) survive one
// collection in the pools' victim caches, then returns free memory to the
// OS.
func releaseMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}
