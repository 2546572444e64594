package upstream

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// logRecorder collects log lines from the checker's goroutines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

// count returns how many lines contain every one of parts.
func (l *logRecorder) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, line := range l.lines {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		n++
	}
	return n
}

// waitLimit bounds every wait of these tests. It is a backstop for a
// check that would otherwise hang, not a measure of speed: tests run with
// every package at once under -race on a busy machine, where an interval of
// the checker or of discovery can stretch far beyond its nominal length.
const waitLimit = 20 * time.Second

// waitFor polls cond until it holds, failing the test after waitLimit; it
// returns how long that took.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > waitLimit {
			t.Fatalf("%s: not within %v", what, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// httpGetProbe is the simplest real probe: GET /health, 2xx is healthy.
func httpGetProbe(ctx context.Context, address string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+address+"/health", nil)
	if err != nil {
		return err
	}
	// No keep-alive: an idle connection would outlive the test's view of
	// the goroutines.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// flippable is a test server whose /health status can be changed.
func flippable(t *testing.T) (addr string, status *atomic.Int32) {
	status = new(atomic.Int32)
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), status
}

// picked reports whether a few picks over a pool of equally weighted
// servers reach s; smooth round robin reaches every usable server within
// len(servers) picks.
func picked(p *Pool, s *Server) bool {
	for range 2 * len(p.Servers()) {
		if got, err := p.Pick(&Request{}, nil); err == nil && got == s {
			return true
		}
	}
	return false
}

func TestCheckDownAndBackUp(t *testing.T) {
	addrA, _ := flippable(t)
	addrB, statusB := flippable(t)
	a, b := &Server{Address: addrA}, &Server{Address: addrB}
	p := newTestPool(t, "web", []*Server{a, b}, Options{Balance: "round_robin"})

	var probesB atomic.Int64
	probe := func(ctx context.Context, address string) error {
		if address == addrB {
			probesB.Add(1)
		}
		return httpGetProbe(ctx, address)
	}
	const interval = 250 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs logRecorder
	// A generous probe timeout: a's probes must not fail because a loaded
	// machine answered slowly.
	p.StartChecks(ctx, CheckConfig{Interval: interval, Timeout: 10 * time.Second, Healthy: 2, Unhealthy: 2}, probe, logs.logf)
	waitFor(t, "first probe of b", func() bool { return probesB.Load() >= 1 })
	if !picked(p, b) {
		t.Fatal("healthy server b not picked")
	}

	statusB.Store(http.StatusInternalServerError)
	took := waitFor(t, "b out of rotation after it fails", func() bool { return !picked(p, b) })
	t.Logf("b out of rotation %v after its health path turned 500", took)
	for range 20 {
		if s, _ := p.Pick(&Request{}, nil); s != a {
			t.Fatalf("picked %v while b is down", s.Address)
		}
	}

	statusB.Store(http.StatusOK)
	took = waitFor(t, "b back in rotation after it heals", func() bool { return picked(p, b) })
	t.Logf("b back in rotation %v after it healed", took)

	// A few more rounds in the same state must not log again.
	n := probesB.Load()
	waitFor(t, "three more rounds", func() bool { return probesB.Load() >= n+3 })
	if got := logs.count("upstream web server "+addrB+": health check failed 2 times (", "status 500", "): down"); got != 1 {
		t.Errorf("%d down lines for b, want 1: %q", got, logs.lines)
	}
	if got := logs.count("upstream web server " + addrB + ": health check passed 2 times: up"); got != 1 {
		t.Errorf("%d up lines for b, want 1: %q", got, logs.lines)
	}
	if got := logs.count(addrA); got != 0 {
		t.Errorf("healthy a logged: %q", logs.lines)
	}
}

// A single pass between failures restarts the count: only consecutive
// failures put a server down.
func TestCheckNeedsConsecutiveFailures(t *testing.T) {
	var h health
	for range 5 {
		if changed, _ := h.probed(false, 2, 3); changed {
			t.Fatal("down before 3 consecutive failures")
		}
		if changed, _ := h.probed(false, 2, 3); changed {
			t.Fatal("down before 3 consecutive failures")
		}
		h.probed(true, 2, 3)
	}
	h.probed(false, 2, 3)
	h.probed(false, 2, 3)
	if changed, streak := h.probed(false, 2, 3); !changed || streak != 3 || h.up(time.Now()) {
		t.Fatalf("3 failures: changed %v streak %d up %v", changed, streak, h.up(time.Now()))
	}
	h.probed(true, 2, 3)
	h.probed(false, 2, 3)
	if changed, _ := h.probed(true, 2, 3); changed {
		t.Fatal("up after 2 passes that were not consecutive")
	}
	if changed, streak := h.probed(true, 2, 3); !changed || streak != 2 || !h.up(time.Now()) {
		t.Fatalf("2 passes: changed %v streak %d", changed, streak)
	}
}

// tcpProbe dials the server: healthy when it accepts.
func tcpProbe(ctx context.Context, address string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return err
	}
	return c.Close()
}

// closedPort returns a 127.0.0.1 address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Servers added while the checks run start up and are probed from the
// next round on; removed servers are no longer probed.
func TestCheckFollowsServerList(t *testing.T) {
	up := httptest.NewServer(http.NotFoundHandler())
	defer up.Close()
	addrA, addrB := up.Listener.Addr().String(), closedPort(t)
	a := &Server{Address: addrA}
	p := newTestPool(t, "web", []*Server{a}, Options{Balance: "round_robin"})

	release := make(chan struct{})
	var probesA, probesB atomic.Int64
	probe := func(ctx context.Context, address string) error {
		if address == addrB {
			// Hold b's first probe until the test saw b picked.
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			probesB.Add(1)
		} else {
			probesA.Add(1)
		}
		return tcpProbe(ctx, address)
	}
	const interval = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs logRecorder
	p.StartChecks(ctx, CheckConfig{Interval: interval, Timeout: time.Second, Healthy: 2, Unhealthy: 2}, probe, logs.logf)

	b := &Server{Address: addrB}
	p.SetServers([]*Server{a, b})
	if !picked(p, b) {
		t.Fatal("a new server is not up before its first probe")
	}
	close(release)
	waitFor(t, "unreachable b out of rotation", func() bool { return !picked(p, b) })
	if got := logs.count(addrB, "health check failed 2 times", "connection refused", "down"); got != 1 {
		t.Errorf("%d down lines for b, want 1: %q", got, logs.lines)
	}

	p.SetServers([]*Server{a})
	nB := probesB.Load()
	nA := probesA.Load()
	waitFor(t, "three more rounds", func() bool { return probesA.Load() >= nA+3 })
	// One probe of b may have started before the list changed.
	if got := probesB.Load(); got > nB+1 {
		t.Errorf("removed server probed %d more times", got-nB)
	}
}

func TestCheckStopsOnCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Accept nothing: every probe waits for its timeout, so cancel finds
	// probes in flight.
	var probes atomic.Int64
	hang := func(ctx context.Context, address string) error {
		probes.Add(1)
		<-ctx.Done()
		return ctx.Err()
	}
	servers := make([]*Server, 40)
	for i := range servers {
		servers[i] = &Server{Address: fmt.Sprintf("%s#%d", ln.Addr(), i)}
	}
	p := newTestPool(t, "web", servers, Options{Balance: "round_robin"})

	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	var logs logRecorder
	p.StartChecks(ctx, CheckConfig{Interval: 50 * time.Millisecond, Timeout: time.Minute, Healthy: 1, Unhealthy: 1}, hang, logs.logf)
	waitFor(t, "probes in flight", func() bool { return probes.Load() >= maxConcurrentProbes })
	if got := runtime.NumGoroutine() - before; got > maxConcurrentProbes+1 {
		t.Errorf("%d goroutines for one pool's checks, want at most %d", got, maxConcurrentProbes+1)
	}
	cancel()
	waitFor(t, "checker goroutines gone", func() bool { return runtime.NumGoroutine() <= before })
	if n := probes.Load(); n != maxConcurrentProbes {
		t.Errorf("%d probes started, want %d (bounded, and none after cancel)", n, maxConcurrentProbes)
	}
	if len(logs.lines) != 0 {
		t.Errorf("probes cut short by cancel were judged: %q", logs.lines)
	}
}
