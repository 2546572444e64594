package upstream

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

// health is a server's health as the pool sees it: passive (failures of
// real traffic, nginx's max_fails/fail_timeout) and active (probes).
type health struct {
	mu          sync.Mutex
	fails       int       // failures in the current window
	windowStart time.Time // when the current window's first failure happened
	downUntil   time.Time // passive: down until then
	probeDown   bool      // active: unhealthy probes in a row put it down
	probeStreak int       // active: consecutive probe results against the current state
}

// up reports whether the server may take new connections at now.
func (h *health) up(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.probeDown && !now.Before(h.downUntil)
}

// why says why the server is not up at now, or "" when it is.
func (h *health) why(now time.Time) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.probeDown:
		return "health check failing"
	case now.Before(h.downUntil):
		return "max_fails reached: out until " + h.downUntil.UTC().Format(time.TimeOnly)
	}
	return ""
}

// fail counts a failure: maxFails of them within failTimeout put the
// server down for failTimeout. maxFails 0 disables passive health.
func (h *health) fail(now time.Time, maxFails int, failTimeout time.Duration) {
	if maxFails <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fails == 0 || now.Sub(h.windowStart) > failTimeout {
		h.fails, h.windowStart = 0, now
	}
	h.fails++
	if h.fails >= maxFails {
		h.downUntil = now.Add(failTimeout)
		h.fails = 0
	}
}

// succeed clears the failure count, as a successful request does in nginx.
func (h *health) succeed() {
	h.mu.Lock()
	h.fails = 0
	h.mu.Unlock()
}

// probed records one active check: unhealthy failures in a row put an up
// server down, healthy passes in a row bring a down server back. Only the
// results that contradict the current state are counted, so a single
// result of the other kind restarts the streak. It returns whether this
// result changed the state (so the caller logs each change once) and the
// streak that did it.
func (h *health) probed(ok bool, healthy, unhealthy int) (changed bool, streak int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ok != h.probeDown {
		// Agrees with the current state: nothing is building up.
		h.probeStreak = 0
		return false, 0
	}
	h.probeStreak++
	need := unhealthy
	if h.probeDown {
		need = healthy
	}
	if h.probeStreak < need {
		return false, 0
	}
	streak = h.probeStreak
	h.probeDown, h.probeStreak = !h.probeDown, 0
	return true, streak
}

// serverToken names a server in a sticky cookie: stable across restarts and
// across gateway processes with the same config, opaque to clients.
func serverToken(pool, address string) string {
	sum := sha256.Sum256([]byte(pool + "\x00" + address))
	return hex.EncodeToString(sum[:8])
}
