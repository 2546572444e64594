package tests

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// routedConfig fronts a WebSocket upstream by exact host and a plain HTTP
// upstream by wildcard host; extra is appended as more top-level keys.
func routedConfig(listen, wsAddr, httpAddr, extra string) string {
	return fmt.Sprintf(`listeners:
  - address: %s
routes:
  - host: ws.repo
    upstream: ws_echo
  - host: "*.example.test"
    upstream: web
upstreams:
  ws_echo:
    servers:
      - address: %s
  web:
    servers:
      - address: %s
%s`, listen, wsAddr, httpAddr, extra)
}

func TestRouting(t *testing.T) {
	t.Parallel()
	wsAddr, httpAddr := echoUpstream(t), httpUpstream(t)
	gw := freeAddr(t)
	p := startGateway(t, gw, routedConfig(gw, wsAddr, httpAddr, ""))

	c := mustDialWS(t, gw, "ws://ws.repo/chat")
	echo(t, c, "hello through wsgate")
	echo(t, c, strings.Repeat("x", 100<<10)) // more than one relay buffer
	closeWS(t, c)

	status, body := httpGet(t, gw, "a.example.test", "/page")
	if status != 200 || body != "plain upstream: host=a.example.test path=/page" {
		t.Errorf("GET Host a.example.test: %d %q; want 200 from the plain upstream", status, body)
	}

	status, body = httpGet(t, gw, "other.test", "/")
	if status != 404 || !strings.Contains(body, "other.test") {
		t.Errorf("GET Host other.test: %d %q; want 404 with a reason naming the host", status, body)
	}

	// The tunnel's access log line is written when it ends, which the
	// gateway sees shortly after our close.
	var line string
	eventually(t, waitLimit, "access log line for the tunnel", func() bool {
		line = lineContaining(p.stdout.String(), "upstream="+wsAddr)
		return line != ""
	})
	if !strings.Contains(line, "status=101") {
		t.Errorf("tunnel access log line %q lacks status=101", line)
	}
}

// SIGTERM stops new connections at once but lets a live tunnel carry on
// until its client leaves; only then does the process exit.
func TestSIGTERMDrainsTunnels(t *testing.T) {
	t.Parallel()
	wsAddr := echoUpstream(t)
	gw := freeAddr(t)
	p := startGateway(t, gw, routedConfig(gw, wsAddr, "127.0.0.1:9", ""))

	c := mustDialWS(t, gw, "ws://ws.repo/")
	echo(t, c, "before")

	p.signal(t, syscall.SIGTERM)
	p.waitOutput(t, p.stderr, "draining", waitLimit)
	eventually(t, waitLimit, "listener closed after SIGTERM", func() bool {
		conn, err := net.DialTimeout("tcp", gw, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})

	echo(t, c, "during drain")
	if p.exited() {
		t.Fatal("wsgate exited while a tunnel was open and the drain timeout not reached")
	}

	closeWS(t, c)
	if code := p.wait(t, waitLimit); code != 0 {
		t.Fatalf("exit %d after drain, want 0", code)
	}
}

// A tunnel that outlives timeouts.drain is closed, and the process exits
// soon after the drain timeout rather than waiting for the client.
func TestSIGTERMDrainTimeout(t *testing.T) {
	t.Parallel()
	wsAddr := echoUpstream(t)
	gw := freeAddr(t)
	p := startGateway(t, gw, routedConfig(gw, wsAddr, "127.0.0.1:9", "timeouts: {drain: 1s}\n"))

	c := mustDialWS(t, gw, "ws://ws.repo/")
	echo(t, c, "before")

	start := time.Now()
	p.signal(t, syscall.SIGTERM)
	code := p.wait(t, waitLimit)
	took := time.Since(start)
	if code != 0 {
		t.Errorf("exit %d after drain timeout, want 0", code)
	}
	if took < 900*time.Millisecond {
		t.Errorf("exited %s after SIGTERM; the open tunnel should have been given the 1s drain", took)
	}

	// The gateway closed its end, so the client's read ends with an error
	// other than our own deadline.
	c.SetReadDeadline(time.Now().Add(waitLimit))
	_, _, err := c.ReadMessage()
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("client read after drain: %v; want the connection closed", err)
	}
}

// A second SIGTERM during a long drain closes the remaining tunnels at once
// and the process still exits cleanly; a SIGHUP meanwhile changes nothing.
func TestSecondSIGTERMEndsDrain(t *testing.T) {
	t.Parallel()
	wsAddr := echoUpstream(t)
	gw := freeAddr(t)
	p := startGateway(t, gw, routedConfig(gw, wsAddr, "127.0.0.1:9", "timeouts: {drain: 1m}\n"))

	c := mustDialWS(t, gw, "ws://ws.repo/")
	echo(t, c, "before")
	p.signal(t, syscall.SIGTERM)
	p.waitOutput(t, p.stderr, "draining 1 tunnels", waitLimit)
	p.signal(t, syscall.SIGHUP)
	echo(t, c, "still draining") // HUP neither killed the process nor the tunnel
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, waitLimit); code != 0 {
		t.Fatalf("exit %d after a second SIGTERM, want 0", code)
	}
	c.SetReadDeadline(time.Now().Add(waitLimit))
	if _, _, err := c.ReadMessage(); err == nil {
		t.Fatal("tunnel still open after the second SIGTERM")
	}
}
