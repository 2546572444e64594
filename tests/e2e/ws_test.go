package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startWSServer returns the port of apps/ws/server.js, started once per
// test binary (it keeps no state between connections). It stands for the
// nginx example's 127.0.0.1:3000, on a free port so that the tests do not
// depend on 3000 being unused.
func startWSServer(t *testing.T) int {
	t.Helper()
	_, port := sharedPeer(t, "ws-server", "node", func(port int) []string {
		return []string{"apps/ws/server.js", "--port", fmt.Sprint(port)}
	})
	return port
}

// TestWSHostRoute is the classic nginx setup (`server_name ws.repo;`
// proxying to a node ws server) as a wsgate host route. Chromium resolves
// ws.repo to 127.0.0.1 and runs new WebSocket('ws://ws.repo:PORT/'): the
// greeting arrives, an echo round trip works, and the server saw the Host
// the browser sent. Requests for another host get the gateway's 404.
func TestWSHostRoute(t *testing.T) {
	// Parallel: most of the test is waiting on timers and pushes, and 2 at
	// a time (GOMAXPROCS on CI) keeps the package well inside its budget.
	t.Parallel()
	requirePeers(t)
	up := startWSServer(t)
	gw := freePort(t)
	startWsgate(t, gw, fmt.Sprintf(`
listeners:
  - address: 127.0.0.1:%d
routes:
  - host: ws.repo
    path: /
    upstream: ws_server
upstreams:
  ws_server:
    servers:
      - address: 127.0.0.1:%d
`, gw, up))

	out := runBrowser(t, "scenarios/ws_host.js", fmt.Sprintf("http://ws.repo:%d/", gw))
	var got struct {
		URL      string `json:"url"`
		Greeting struct {
			Type   string `json:"type"`
			Server string `json:"server"`
			Host   string `json:"host"`
			XFF    string `json:"xff"`
		} `json:"greeting"`
		Sent       string `json:"sent"`
		Echo       string `json:"echo"`
		PageStatus int    `json:"pageStatus"`
		PageTitle  string `json:"pageTitle"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("browser result %q: %v", out, err)
	}
	wantHost := fmt.Sprintf("ws.repo:%d", gw)
	if got.PageStatus != 200 || got.PageTitle != "ws behind wsgate" {
		t.Errorf("page http://%s/: status %d, title %q; want 200 and the ws server's page", wantHost, got.PageStatus, got.PageTitle)
	}
	if got.Greeting.Type != "greeting" || got.Greeting.Server != "ws-server" {
		t.Errorf("first message %+v, want the ws server's greeting", got.Greeting)
	}
	if got.Greeting.Host != wantHost {
		t.Errorf("the ws server saw Host %q, want %q unchanged", got.Greeting.Host, wantHost)
	}
	if got.Greeting.XFF != "127.0.0.1" {
		t.Errorf("the ws server saw X-Forwarded-For %q, want 127.0.0.1", got.Greeting.XFF)
	}
	if got.Echo != got.Sent || got.Sent == "" {
		t.Errorf("echo %q, want %q", got.Echo, got.Sent)
	}
	t.Logf("Chromium on %s: greeting %+v, echo round trip of %q", got.URL, got.Greeting, got.Sent)

	// Another host: a page request and a WebSocket handshake both get the
	// gateway's 404, as nginx answers for a server_name it does not have
	// (with no default server).
	client := &http.Client{Timeout: 5 * time.Second}
	for _, host := range []string{"other.test", wantHost} {
		req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", gw), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET / Host %s: %v", host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := 404
		if host == wantHost {
			want = 200 // the contrast: the same request for ws.repo is routed
		}
		if resp.StatusCode != want {
			t.Errorf("GET / Host %s: %d %q, want %d", host, resp.StatusCode, body, want)
		}
		if want == 404 && !strings.Contains(string(body), "no route for host other.test") {
			t.Errorf("GET / Host %s: body %q, want the gateway's no-route reason", host, body)
		}
	}
	if status := rawHandshake(t, gw, "other.test"); status != 404 {
		t.Errorf("WebSocket handshake with Host other.test: status %d, want 404", status)
	}
}

// rawHandshake sends a WebSocket handshake for host to the gateway on port
// and returns the response status.
func rawHandshake(t *testing.T, port int, host string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("handshake with Host %s: %v", host, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
