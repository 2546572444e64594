package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/config"
)

// silentTCPUpstream accepts connections and holds them, answering nothing,
// on one goroutine; it reports each accept on accepted. close closes
// every conn it holds.
func silentTCPUpstream(t *testing.T) (addr string, accepted <-chan struct{}, closeAll func()) {
	t.Helper()
	ln := listenLocal(t)
	ch := make(chan struct{}, 1024)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			ch <- struct{}{}
		}
	}()
	closeAll = func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	t.Cleanup(closeAll)
	return ln.Addr().String(), ch, closeAll
}

const testHandshake = "GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// Handshakes on a plain listener run on the relay's event loops: while
// their upstream has not answered, they hold no goroutine. On the fasthttp
// path each held a worker goroutine until its answer came. When the
// upstream then fails them, every client gets the gateway's 502.
func TestLoopHandshakesHoldNoGoroutine(t *testing.T) {
	const n = 200
	up, accepted, closeUpstream := silentTCPUpstream(t)
	cfg := configFor(up)
	cfg.Timeouts.Handshake = config.Duration(time.Minute)
	cfg.Upstreams["backend"].Retries = new(int) // one server: fail at once
	addr := startGateway(t, cfg).Addrs()[0].String()

	// Settle what starting the gateway started.
	dial(t, gatewayFor(t, echoUpstream(t, websocket.Upgrader{})), "/", nil).Close()
	before := runtime.NumGoroutine()
	clients := make([]net.Conn, 0, n)
	for range n {
		c := dialRaw(t, addr, time.Minute)
		if _, err := io.WriteString(c, testHandshake); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	for i := range n {
		select {
		case <-accepted:
		case <-time.After(time.Minute):
			t.Fatalf("the upstream got %d of %d handshakes", i, n)
		}
	}
	during := runtime.NumGoroutine()
	if during-before > n/4 {
		t.Errorf("%d goroutines with %d handshakes waiting for their upstream, %d before: the handshakes hold goroutines", during, n, before)
	}

	closeUpstream()
	for i, c := range clients {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "upstream failed during the websocket handshake") {
			t.Fatalf("client %d: %d %q, want 502 naming the failed handshake", i, resp.StatusCode, body)
		}
	}
}

// A server named by a host name is reached from the loop too: discovery
// resolves the name, and the loop connects to the addresses it found.
func TestLoopHandshakeToServerByName(t *testing.T) {
	up := echoUpstream(t, websocket.Upgrader{})
	_, port, _ := net.SplitHostPort(up)
	cfg := configFor("localhost:" + port)
	cfg.ApplyDefaults()
	c := dial(t, startGateway(t, cfg).Addrs()[0].String(), "/", nil)
	if err := c.WriteMessage(websocket.TextMessage, []byte("by name")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "by name" {
		t.Fatalf("echo through a server named by host name: %q %v", msg, err)
	}
}

// A drain that starts while a handshake waits on the loop for its
// upstream's 101 waits for it: the client gets the 101, then Close 1001
// when the drain ends the tunnel.
func TestDrainWaitsForLoopHandshake(t *testing.T) {
	release := make(chan struct{})
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		echoHandler(websocket.Upgrader{}).ServeHTTP(w, r)
	}))
	cfg := configFor(up)
	cfg.Timeouts.Drain = config.Duration(time.Second)
	cfg.ApplyDefaults()
	g, err := New(cfg, Options{AccessLog: io.Discard, ErrorLog: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	addr := g.Addrs()[0].String()

	type result struct {
		c   *websocket.Conn
		err error
	}
	dialed := make(chan result, 1)
	go func() {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
		dialed <- result{c, err}
	}()
	waitFor(t, "the handshake pending on the loop", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.pending == 1
	})
	drained := make(chan error, 1)
	go func() { drained <- g.Shutdown(context.Background()) }()
	waitListenerClosed(t, addr)
	close(release)

	r := <-dialed
	if r.err != nil {
		t.Fatalf("the handshake in flight when the drain began: %v", r.err)
	}
	defer r.c.Close()
	r.c.SetReadDeadline(time.Now().Add(time.Minute))
	_, _, err = r.c.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("the tunnel at the drain's end: %v, want Close 1001", err)
	}
	if err := <-drained; err != nil {
		t.Logf("drain: %v", err)
	}
}

// An answer read in any number of pieces gives the same head as read
// whole: appendAnswer finds its end even when "\r\n\r\n" is split across
// reads, keeps every byte read, and refuses a head past maxResponseHead.
func FuzzAppendAnswer(f *testing.F) {
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi"), []byte{10, 1, 1, 1})
	f.Add([]byte("HTTP/1.1 403 Forbidden\r\n\r"), []byte{3})
	f.Add(bytes.Repeat([]byte("x"), maxResponseHead+8), []byte{200, 200})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		whole := bytes.Index(data, []byte("\r\n\r\n"))
		var raw []byte
		at := 0
		for i := 0; at < len(data); i++ {
			n := len(data) - at
			if i < len(cuts) {
				// Pieces of 1 to 256 bytes, the last one the rest, and
				// none larger than a loop's read buffer.
				n = min(n, int(cuts[i])+1)
			}
			n = min(n, relayReadSize)
			chunk := data[at : at+n]
			at += n
			got, headLen, err := appendAnswer(raw, chunk)
			if err != nil {
				if whole >= 0 && whole+4 <= maxResponseHead {
					t.Fatalf("error %v; the head ends at %d", err, whole+4)
				}
				if at < maxResponseHead {
					t.Fatalf("error %v after only %d bytes", err, at)
				}
				return
			}
			if !bytes.Equal(got, data[:at]) {
				t.Fatalf("kept %q, read %q", got, data[:at])
			}
			if headLen > 0 {
				if headLen != whole+4 {
					t.Fatalf("head of %d bytes, want %d", headLen, whole+4)
				}
				return
			}
			if whole >= 0 && whole+4 <= at && whole+4 <= maxResponseHead {
				t.Fatalf("head end at %d not found after %d bytes", whole+4, at)
			}
			raw = got
		}
	})
}
