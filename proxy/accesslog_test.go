package proxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/internal/syncbuf"
)

// The access log line of a tunnel names the upstream, the bytes each way
// and who closed it.
func TestAccessLogNamesWhoClosed(t *testing.T) {
	closer := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := websocket.Upgrader{}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if r.URL.Query().Get("close") != "" {
			c.Close() // the upstream hangs up at once
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil || c.WriteMessage(mt, msg) != nil {
				return
			}
		}
	}))
	var log syncbuf.Buffer
	cfg := configFor(closer)
	cfg.Timeouts.Idle = 5e8 // 500ms
	g, err := New(cfg, Options{AccessLog: &log, ErrorLog: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown(t.Context())
	addr := g.Addrs()[0].String()

	c := dial(t, addr, "/by-client", nil)
	c.WriteMessage(websocket.TextMessage, []byte("12345"))
	c.ReadMessage()
	c.Close()
	dial(t, addr, "/by-upstream?close=1", nil).ReadMessage()
	dial(t, addr, "/idle", nil).ReadMessage()

	waitFor(t, "three tunnel lines", func() bool { return strings.Count(log.String(), "status=101") == 3 })
	for uri, want := range map[string]string{
		"/by-client":           "closed_by=client",
		"/by-upstream?close=1": "closed_by=upstream",
		"/idle":                "closed_by=idle",
	} {
		line := lineWith(log.String(), " "+uri+" ")
		if !strings.Contains(line, want) || !strings.Contains(line, "upstream="+closer) {
			t.Errorf("log line for %s: %q, want %s and upstream=%s", uri, line, want, closer)
		}
	}
	// The client sent one 5-byte message: 11 bytes on the wire
	// (2 header + 4 mask + 5 payload).
	if line := lineWith(log.String(), " /by-client "); !strings.Contains(line, " up=11 ") || !strings.Contains(line, " msgs_up=1 msgs_down=1 ") {
		t.Errorf("bytes not counted: %q", line)
	}
}

func lineWith(log, sub string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
