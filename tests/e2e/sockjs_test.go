package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// sockjsResult is what scenarios/sockjs_transport.js returns.
type sockjsResult struct {
	Transport string `json:"transport"`
	Hello     struct {
		Name      string `json:"name"`
		Transport string `json:"transport"`
	} `json:"hello"`
	Sent   []string `json:"sent"`
	Echoes []string `json:"echoes"`
	Pushes []struct {
		N         int   `json:"n"`
		SentAt    int64 `json:"sentAt"`
		ArrivedAt int64 `json:"arrivedAt"`
	} `json:"pushes"`
	Requests []string `json:"requests"`
}

// TestSockJS: a SockJS echo-and-push server behind wsgate, and the page's
// sockjs-client on three transports in turn: its default (WebSocket), then
// with WebSocket left out, xhr-streaming and xhr-polling. On each, messages
// go both ways (3 echoes, 8 pushes). The server writes each push only after
// the page has acknowledged the one before (see apps/sockjs/server.js), so
// on xhr-streaming, where every push travels on one long response, 8 pushes
// can reach the page only if the gateway relays each chunk of that response
// as it comes: one that held the stream until a buffer filled or the
// response ended would stall the lockstep at the first push, and the page
// would time out waiting.
func TestSockJS(t *testing.T) {
	t.Parallel()
	requirePeers(t)
	// One server: SockJS's HTTP transports keep a session in one process,
	// so several would need sticky_cookie (see TestSocketIOSticky).
	up := freePort(t)
	server := startNode(t, up, "apps/sockjs/server.js", "--port", fmt.Sprint(up), "--name", "sockjs-1", "--push-ms", "50")
	gw := freePort(t)
	startWsgate(t, gw, fmt.Sprintf(`
listeners:
  - address: 127.0.0.1:%d
routes:
  - upstream: sockjs
upstreams:
  sockjs:
    servers:
      - address: 127.0.0.1:%d
`, gw, up))
	page := fmt.Sprintf("http://127.0.0.1:%d/", gw)

	for _, tc := range []struct {
		name       string
		transports string // sockjs-client's transports option; "" for its default
		want       string // the transport the session must use
		urlSuffix  string // how the page's requests for that transport end
	}{
		{"websocket", "", "websocket", "/websocket"},
		{"xhr-streaming", "xhr-streaming", "xhr-streaming", "/xhr_streaming"},
		{"xhr-polling", "xhr-polling", "xhr-polling", "/xhr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := runBrowser(t, "scenarios/sockjs_transport.js", page, tc.transports, "8")
			var got sockjsResult
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("browser result %q: %v", out, err)
			}
			// Both ends agree on the transport.
			if got.Transport != tc.want || got.Hello.Transport != tc.want {
				t.Errorf("client on %q, server saw %q; want %q", got.Transport, got.Hello.Transport, tc.want)
			}
			carried := 0
			for _, r := range got.Requests {
				if strings.HasSuffix(r, tc.urlSuffix) {
					carried++
				}
				// With WebSocket left out, the client must not open one.
				if tc.want != "websocket" && strings.HasPrefix(r, "WS ") {
					t.Errorf("transports %q, yet the page opened a WebSocket: %s", tc.transports, r)
				}
			}
			if carried == 0 {
				t.Errorf("no request of the page ends in %s: %q", tc.urlSuffix, got.Requests)
			}
			// Client to server and back.
			if fmt.Sprint(got.Echoes) != fmt.Sprint(got.Sent) {
				t.Errorf("echoes %q, want %q", got.Echoes, got.Sent)
			}
			// Server to client: consecutive pushes, none lost or repeated.
			if len(got.Pushes) < 8 {
				t.Fatalf("%d pushes, want 8", len(got.Pushes))
			}
			for i := 1; i < len(got.Pushes); i++ {
				if got.Pushes[i].N != got.Pushes[i-1].N+1 {
					t.Errorf("push %d follows push %d", got.Pushes[i].N, got.Pushes[i-1].N)
				}
			}
			delays := make([]time.Duration, len(got.Pushes))
			for i, p := range got.Pushes {
				delays[i] = time.Duration(p.ArrivedAt-p.SentAt) * time.Millisecond
			}
			// The delays are for the reader: the lockstep, checked below
			// from the server's log, is what the test relies on.
			t.Logf("%s: %d echoes, %d pushes (n=%d..%d), delay sent->page %v; page requests %q",
				got.Transport, len(got.Echoes), len(got.Pushes), got.Pushes[0].N, got.Pushes[len(got.Pushes)-1].N,
				delays, got.Requests)
		})
	}

	// The server's side: one session per transport, each got the 3
	// messages, and each wrote push n+1 only after the page's ack of push
	// n (the lockstep the streaming check relies on).
	sessions := map[string]string{} // id -> transport
	data := map[string]int{}        // transport -> messages received
	pushed := map[string]int{}      // transport -> last push written
	acked := map[string]int{}       // transport -> last push acknowledged
	for _, line := range strings.Split(strings.TrimSpace(server.stdout.String()), "\n") {
		var l struct {
			Event, ID, Transport string
			N                    int
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Errorf("server logged %q: %v", line, err)
			continue
		}
		tr := sessions[l.ID]
		switch l.Event {
		case "connection":
			sessions[l.ID] = l.Transport
		case "data":
			data[tr]++
		case "push":
			if l.N != pushed[tr]+1 || (l.N > 1 && acked[tr] != l.N-1) {
				t.Errorf("%s: server wrote push %d after push %d and ack %d; want each push after the ack of the one before", tr, l.N, pushed[tr], acked[tr])
			}
			pushed[tr] = l.N
		case "ack":
			acked[tr] = l.N
		case "sockjs-error":
			t.Errorf("server error: %s", line)
		}
	}
	for _, tr := range []string{"websocket", "xhr-streaming", "xhr-polling"} {
		if data[tr] != 3 {
			t.Errorf("server got %d messages over %s, want 3 (sessions %v)", data[tr], tr, sessions)
		}
		if acked[tr] < 8 {
			t.Errorf("page acknowledged %d pushes over %s, want 8", acked[tr], tr)
		}
	}
}
