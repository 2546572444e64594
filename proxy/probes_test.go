package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// probeWithin runs probe against addr with a timeout, as the checker does.
func probeWithin(probe func(context.Context, string) error, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return probe(ctx, addr)
}

func TestProbeHTTPStatus(t *testing.T) {
	type seen struct {
		method, path, host, ua string
		close                  bool
	}
	requests := make(chan seen, 10)
	status := map[string]int{"/ok": 200, "/fail": 500, "/empty": 204, "/moved": 302, "/missing": 404}
	addr := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests <- seen{r.Method, r.URL.Path, r.Host, r.UserAgent(), r.Close}
		w.WriteHeader(status[r.URL.Path])
	}))
	for _, tc := range []struct {
		path   string
		expect int
		ok     bool
	}{
		{"/ok", 0, true},
		{"/fail", 0, false},
		{"/empty", 0, true},
		{"/moved", 0, true},
		{"/missing", 0, false},
		{"/empty", 204, true},
		{"/ok", 204, false},
		{"/fail", 500, true},
	} {
		err := probeWithin(httpProbe(tc.path, tc.expect, nil), addr, 2*time.Second)
		if (err == nil) != tc.ok {
			t.Errorf("GET %s expecting %d: err %v, want ok %v", tc.path, tc.expect, err, tc.ok)
		}
		got := <-requests
		if want := (seen{"GET", tc.path, addr, "wsgate-health-check", true}); got != want {
			t.Errorf("server saw %+v, want %+v", got, want)
		}
	}
}

func TestProbeHTTPRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := probeWithin(httpProbe("/", 0, nil), addr, 2*time.Second); err == nil {
		t.Fatal("probe of a closed port passed")
	}
	if err := probeWithin(websocketProbe("/", nil), addr, 2*time.Second); err == nil {
		t.Fatal("WebSocket probe of a closed port passed")
	}
}

// silentServer accepts connections and never answers.
func silentServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return ln.Addr().String()
}

func TestProbeTimeout(t *testing.T) {
	addr := silentServer(t)
	const timeout = 200 * time.Millisecond
	for name, probe := range map[string]func(context.Context, string) error{
		"http": httpProbe("/", 0, nil), "websocket": websocketProbe("/", nil),
	} {
		start := time.Now()
		err := probeWithin(probe, addr, timeout)
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: err %v, want a deadline error", name, err)
		}
		// The upper bound is generous (load stretches it): the probe must
		// end at its timeout, not wait for the silent server for ever.
		if took < timeout || took > timeout+10*time.Second {
			t.Errorf("%s: failed after %v, want about %v", name, took, timeout)
		}
	}
}

// A probe whose ctx is cancelled returns at once even without a deadline.
func TestProbeCancel(t *testing.T) {
	addr := silentServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- httpProbe("/", 0, nil)(ctx, addr) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled probe did not return")
	}
}

func TestProbeWebSocket(t *testing.T) {
	closes := make(chan error, 1)
	agents := make(chan string, 1)
	up := websocket.Upgrader{}
	addr := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			http.NotFound(w, r)
			return
		}
		agents <- r.UserAgent()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _, err = c.ReadMessage()
		closes <- err
	}))
	if err := probeWithin(websocketProbe("/ws", nil), addr, 2*time.Second); err != nil {
		t.Fatalf("probe of a WebSocket server: %v", err)
	}
	if ua := <-agents; ua != "wsgate-health-check" {
		t.Errorf("User-Agent %q", ua)
	}
	// The server must see a clean close, not a dropped connection.
	if err := <-closes; !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("server read %v, want a Close frame with 1000", err)
	}
	if err := probeWithin(websocketProbe("/other", nil), addr, 2*time.Second); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("probe of a 404 path: %v, want a status error", err)
	}
}

func TestProbeWebSocketPlainHTTP(t *testing.T) {
	addr := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello"))
	}))
	err := probeWithin(websocketProbe("/", nil), addr, 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "status 200, want 101") {
		t.Fatalf("probe of a plain HTTP server: %v, want a status error", err)
	}
}

// A server that answers 101 without computing the Accept key (a cache, a
// fake) fails the probe.
func TestProbeWebSocketWrongAccept(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
					"Sec-WebSocket-Accept: " + AcceptKey("dGhlIHNhbXBsZSBub25jZQ==") + "\r\n\r\n"))
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				br.ReadByte()
			}()
		}
	}()
	err = probeWithin(websocketProbe("/", nil), ln.Addr().String(), 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "Sec-WebSocket-Accept") {
		t.Fatalf("probe of a server with a wrong Accept: %v", err)
	}
}
