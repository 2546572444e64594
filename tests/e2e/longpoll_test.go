package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestLongPoll: a page loops on GET /poll?after=N through wsgate while the
// upstream holds each poll until the next event (one every 1.5 s). Ten
// events must arrive in order with none lost or duplicated, every poll must
// have been held (the gateway does not buffer or time it out), and the
// upstream must have seen exactly one request per poll: the gateway never
// sends a held request twice.
func TestLongPoll(t *testing.T) {
	// Parallel: most of the test is waiting on timers and pushes, and 2 at
	// a time (GOMAXPROCS on CI) keeps the package well inside its budget.
	t.Parallel()
	requirePeers(t)
	const events = 10
	up := freePort(t)
	startNode(t, up, "apps/longpoll/server.js", "--port", fmt.Sprint(up), "--interval", "1500", "--hold", "20000")
	gw := freePort(t)
	// idle above the upstream's 20 s hold: that is the one setting a
	// long-poll needs (the default 1h is already above it; this states it).
	startWsgate(t, gw, fmt.Sprintf(`
listeners:
  - address: 127.0.0.1:%d
routes:
  - upstream: comet
upstreams:
  comet:
    servers:
      - address: 127.0.0.1:%d
timeouts:
  idle: 30s
`, gw, up))

	start := time.Now()
	out := runBrowser(t, "scenarios/longpoll.js", fmt.Sprintf("http://127.0.0.1:%d/?n=%d", gw, events))
	var got []struct {
		ID int   `json:"id"`
		At int64 `json:"at"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("browser result %q: %v", out, err)
	}
	if len(got) != events {
		t.Errorf("the page got %d events, want %d: %v", len(got), events, got)
	}
	for i, ev := range got {
		if ev.ID != i+1 {
			t.Errorf("event %d in the page is event %d: lost, duplicated or out of order (%v)", i+1, ev.ID, got)
			break
		}
	}

	// The upstream's own count, read from it directly.
	var stats struct {
		Polls    int            `json:"polls"`
		Answered int            `json:"answered"`
		TimedOut int            `json:"timedOut"`
		ByAfter  map[string]int `json:"byAfter"`
		ByRid    map[string]int `json:"byRid"`
		HoldMs   []int          `json:"holdMs"`
		Events   int            `json:"events"`
		Held     int            `json:"held"`
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/stats", up))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(body, &stats); err != nil {
		t.Fatalf("stats %q: %v", body, err)
	}
	if stats.Polls != events || stats.Answered != events || stats.TimedOut != 0 || stats.Held != 0 {
		t.Errorf("upstream saw %d polls, answered %d, %d timed out, %d still held; want %d, %d, 0, 0 (one request per event)",
			stats.Polls, stats.Answered, stats.TimedOut, stats.Held, events, events)
	}
	for after := 0; after < events; after++ {
		if n := stats.ByAfter[fmt.Sprint(after)]; n != 1 {
			t.Errorf("upstream saw poll after=%d %d times, want once", after, n)
		}
	}
	for rid, n := range stats.ByRid {
		if n != 1 {
			t.Errorf("upstream saw request rid=%s %d times: it was retried", rid, n)
		}
	}
	// Held, not answered from some buffer: each poll waited for its event.
	for i, ms := range stats.HoldMs {
		if ms < 500 {
			t.Errorf("poll %d was held %d ms, want about 1500 (an event every 1.5 s)", i+1, ms)
		}
	}
	t.Logf("%d events in order in %v through wsgate; upstream: %d polls, one per event, none retried, holds %v ms",
		len(got), time.Since(start).Round(time.Millisecond), stats.Polls, stats.HoldMs)
}
