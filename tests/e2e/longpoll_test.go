package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// minHold is how long the upstream holds each poll before the test makes
// its event. The test waits for the hold rather than timing it, so load can
// only lengthen it; it is long enough that a gateway which cut a quiet
// exchange, or answered it itself, after a moment would be caught.
const minHold = time.Second

// TestLongPoll: a page loops on GET /poll?after=N through wsgate while the
// upstream holds each poll until the test makes the next event (the upstream
// runs with --interval 0 and makes one per POST /event). For each of ten
// events the test waits until the upstream has held the page's poll for
// minHold, checks that the page still has no answer to it, and only then
// makes the event: an answer the page got earlier could only have come from
// the gateway. The ten events must arrive in order with none lost or
// duplicated, and the upstream must have seen exactly one request per
// poll: the gateway never sends a held request twice.
func TestLongPoll(t *testing.T) {
	// Parallel: most of the test is waiting on held polls, and 2 at a time
	// (GOMAXPROCS on CI) keeps the package well inside its budget.
	t.Parallel()
	requirePeers(t)
	const events = 10
	up := freePort(t)
	startNode(t, up, "apps/longpoll/server.js", "--port", fmt.Sprint(up), "--interval", "0", "--hold", "20000")
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
	// The holds add up to events*minHold; the rest of the limit is room for
	// a slow machine.
	out := runBrowserOpts(t, browserOpts{Timeout: events*minHold + 60*time.Second}, "scenarios/longpoll.js",
		fmt.Sprintf("http://127.0.0.1:%d/?n=%d", gw, events), fmt.Sprintf("http://127.0.0.1:%d", up), fmt.Sprint(minHold.Milliseconds()))
	var result struct {
		Events []struct {
			ID int   `json:"id"`
			At int64 `json:"at"`
		} `json:"events"`
		// Steps[i] is what the upstream and the page showed just before
		// the test made event i+1.
		Steps []struct {
			Polls      int    `json:"polls"`
			Held       int    `json:"held"`
			HeldMs     int    `json:"heldMs"`
			PageEvents int    `json:"pageEvents"`
			PageState  string `json:"pageState"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(out), &result); err != nil {
		t.Fatalf("browser result %q: %v", out, err)
	}
	got := result.Events
	if len(got) != events {
		t.Errorf("the page got %d events, want %d: %v", len(got), events, got)
	}
	// Held, not answered early: while the upstream held poll i (and only
	// it, the only one it had seen for it), the page had no answer to it.
	if len(result.Steps) != events {
		t.Errorf("%d steps noted, want %d", len(result.Steps), events)
	}
	for i, st := range result.Steps {
		if st.Polls != i+1 || st.Held != 1 || st.PageEvents != i || st.PageState != "polling" {
			t.Errorf("poll %d held by the upstream for %d ms: upstream had seen %d polls and held %d, the page had %d events and state %q; want %d, 1, %d, \"polling\"",
				i+1, st.HeldMs, st.Polls, st.Held, st.PageEvents, st.PageState, i+1, i)
		}
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
	t.Logf("%d events in order in %v through wsgate; upstream: %d polls, one per event, none retried, holds %v ms",
		len(got), time.Since(start).Round(time.Millisecond), stats.Polls, stats.HoldMs)
}
