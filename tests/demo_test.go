package tests

import (
	"encoding/json"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// demoEvent is a message from a demo upstream.
type demoEvent struct {
	Type     string `json:"type"`
	Upstream string `json:"upstream"`
	ID       string `json:"id"`
	Time     string `json:"time"`
}

func readEvent(t *testing.T, c *websocket.Conn, d time.Duration) demoEvent {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read demo message: %v", err)
	}
	var ev demoEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		t.Fatalf("demo message %q is not JSON: %v", data, err)
	}
	return ev
}

// `wsgate -demo` is the first thing a new user runs: the page, the
// WebSocket greeting and time pushes, and round robin across the two
// built-in upstreams must all work through the real gateway.
func TestDemo(t *testing.T) {
	t.Parallel()
	gw := freeAddr(t)
	p := startWsgate(t, "", "-demo", "-listen", gw)
	p.waitOutput(t, p.stderr, "listening on "+gw, 10*time.Second)

	status, body := httpGet(t, gw, gw, "/")
	if status != 200 || !strings.Contains(body, "Connect") {
		t.Fatalf("GET /: status %d, body without \"Connect\" (%d bytes)", status, len(body))
	}

	seen := map[string]bool{}
	var open *websocket.Conn
	for i := range 4 {
		c := mustDialWS(t, gw, "ws://"+gw+"/websocket?Id=t1")
		hello := readEvent(t, c, waitLimit)
		if hello.Type != "hello" || hello.ID != "t1" || !strings.HasPrefix(hello.Upstream, "upstream-") {
			t.Fatalf("first message %+v; want a hello for id t1 naming an upstream", hello)
		}
		seen[hello.Upstream] = true
		if i == 0 {
			// The demo pushes once a second; one push proves the
			// upstream-to-client direction carries unsolicited messages.
			ev := readEvent(t, c, waitLimit)
			if ev.Type != "time" || ev.Upstream != hello.Upstream || ev.Time == "" {
				t.Fatalf("second message %+v; want a time push from %s", ev, hello.Upstream)
			}
		}
		if i == 3 {
			// Like a browser tab left open when the user presses Ctrl-C.
			open = c
			break
		}
		closeWS(t, c)
	}
	if !seen["upstream-1"] || !seen["upstream-2"] {
		t.Errorf("upstreams seen over 4 connections: %v; want both upstream-1 and upstream-2", seen)
	}

	// The open page must not hold the demo for the default 30 s drain.
	p.signal(t, syscall.SIGINT)
	if code := p.wait(t, waitLimit); code != 0 {
		t.Fatalf("exit %d after SIGINT, want 0", code)
	}
	// Time pushes may still be queued; read until the connection ends.
	open.SetReadDeadline(time.Now().Add(waitLimit))
	for {
		if _, _, err := open.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the open demo connection was not closed at exit")
			}
			break
		}
	}
}
