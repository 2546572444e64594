package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// echoBackend is a WebSocket echo server on its own listener that a test
// can kill (listener and tunnels) with stop.
type echoBackend struct {
	addr  string
	srv   *http.Server
	conns chan *websocket.Conn
}

func startEchoBackend(t *testing.T) *echoBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &echoBackend{addr: ln.Addr().String(), conns: make(chan *websocket.Conn, 100)}
	// The page is on the admin listener's origin: any origin may open a
	// tunnel here.
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			w.Write([]byte("ok")) // the health check
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		b.conns <- c
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil || c.WriteMessage(mt, msg) != nil {
				return
			}
		}
	})}
	go b.srv.Serve(ln)
	t.Cleanup(b.stop)
	return b
}

// stop kills the server: its listener and every tunnel.
func (b *echoBackend) stop() {
	b.srv.Close()
	for {
		select {
		case c := <-b.conns:
			c.Close()
		default:
			return
		}
	}
}

// TestStatusPage opens the admin status page in Chromium: 25 tunnels
// opened from the page show in #live-tunnels within 2 s, and a backend
// killed by the test shows "down" in its row once the health check has
// seen it. The screenshot is kept in $E2E_ARTIFACTS (or the test's temp
// directory) as status-page.png.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	requirePeers(t)
	a, b := startEchoBackend(t), startEchoBackend(t)
	gw, admin := freePort(t), freePort(t)
	startWsgate(t, gw, fmt.Sprintf(`
listeners:
  - address: 127.0.0.1:%d
routes:
  - path: /
    upstream: echo
upstreams:
  echo:
    balance: round_robin
    health_check:
      path: /health
      interval: 1s
      timeout: 1s
      unhealthy: 1
    servers:
      - address: %s
      - address: %s
admin:
  address: 127.0.0.1:%d
`, gw, a.addr, b.addr, admin))

	killed := make(chan struct{})
	control := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.stop()
		close(killed)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go control.Serve(ln)
	t.Cleanup(func() { control.Close() })

	dir := os.Getenv("E2E_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	shot := filepath.Join(dir, "status-page.png")
	// A longer limit than other scenarios: the screenshot of a live page
	// can take a while on a machine busy with every other test.
	out := runBrowserOpts(t, browserOpts{Timeout: 2 * browserTimeout}, "scenarios/status_page.js",
		fmt.Sprintf("http://127.0.0.1:%d/", admin), fmt.Sprintf("ws://127.0.0.1:%d/tunnel", gw),
		"http://"+ln.Addr().String()+"/kill", b.addr, shot)
	var got struct {
		ShownAfterMs  int64  `json:"shownAfterMs"`
		Before        string `json:"before"`
		TunnelsBefore int    `json:"tunnelsBefore"`
		DownAfterMs   int64  `json:"downAfterMs"`
		Why           string `json:"why"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("scenario result %q: %v", out, err)
	}
	select {
	case <-killed:
	default:
		t.Fatal("the page never asked to kill the backend")
	}
	t.Logf("status page: 25 tunnels shown %d ms after they opened; the killed server shown down after %d ms (%s); screenshot %s",
		got.ShownAfterMs, got.DownAfterMs, got.Why, shot)
	if got.ShownAfterMs > (2 * time.Second).Milliseconds() {
		t.Errorf("#live-tunnels showed 25 after %d ms, want within 2 s", got.ShownAfterMs)
	}
	if got.Before != "up" || got.TunnelsBefore < 1 {
		t.Errorf("the server to kill showed %q with %d tunnels before, want up with its share of 25", got.Before, got.TunnelsBefore)
	}
	if got.Why != "health check failing" {
		t.Errorf("the killed server's row says why %q, want %q", got.Why, "health check failing")
	}
	if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
		t.Errorf("no screenshot: %v", err)
	}
}
