package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/internal/syncbuf"
)

func TestIdleTimeout(t *testing.T) {
	// An upstream that pushes every 100 ms to a client that never sends:
	// the tunnel is busy one way, so it must outlive the 2 s idle timeout.
	// Twenty pushes per timeout: a loaded machine that delays some of them
	// does not make the tunnel look idle.
	pusher := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := websocket.Upgrader{}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for i := 0; ; i++ {
			if r.URL.Query().Get("push") == "" {
				c.ReadMessage()
				return
			}
			if c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint(i))) != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}))
	cfg := configFor(pusher)
	cfg.Timeouts.Idle = 2e9 // 2s
	gw := startGateway(t, cfg).Addrs()[0].String()

	busy := dial(t, gw, "/?push=1", nil)
	quiet := dial(t, gw, "/", nil)
	start := time.Now()
	// The read deadline is a backstop: the gateway must end the tunnel.
	quiet.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, _, err := quiet.ReadMessage()
	var ne net.Error
	switch d := time.Since(start); {
	case err == nil:
		t.Fatal("quiet tunnel got a message")
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("quiet tunnel still open after %v, want it closed by the 2s idle timeout", d)
	case d < 1900*time.Millisecond:
		t.Fatalf("quiet tunnel closed after %v (%v), want about 2s", d, err)
	}
	// 50 pushes span two idle timeouts and a half.
	busy.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range 50 {
		if _, _, err := busy.ReadMessage(); err != nil {
			t.Fatalf("busy tunnel closed after %v and %d pushes: %v", time.Since(start), i, err)
		}
	}
}

func TestDrainWaitsForTunnels(t *testing.T) {
	g := startGateway(t, configFor(echoUpstream(t, websocket.Upgrader{})))
	addr := g.Addrs()[0].String()
	c := dial(t, addr, "/", nil)

	done := make(chan error, 1)
	go func() { done <- g.Shutdown(context.Background()) }()
	waitListenerClosed(t, addr)
	// The live tunnel still works while the gateway drains.
	if err := c.WriteMessage(websocket.TextMessage, []byte("draining")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "draining" {
		t.Fatalf("echo while draining: %q, %v", msg, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a tunnel was live", err)
	default:
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last tunnel ended")
	}
}

// TestConcurrentShutdown: two Shutdowns at once (a signal handler and a
// deferred stop, say) both wait for the one drain and get its result; a
// third whose ctx is over returns at once without cutting the drain short.
// The second drain used to close the access log's channel twice.
func TestConcurrentShutdown(t *testing.T) {
	g := startGateway(t, configFor(echoUpstream(t, websocket.Upgrader{})))
	addr := g.Addrs()[0].String()
	c := dial(t, addr, "/", nil)

	done := make(chan error, 2)
	go func() { done <- g.Shutdown(context.Background()) }()
	waitListenerClosed(t, addr)
	go func() { done <- g.Shutdown(context.Background()) }()
	over, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Shutdown(over); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with an ended ctx during a drain: %v, want context.Canceled", err)
	}
	// The tunnel is still live: neither later call ended the drain.
	if err := c.WriteMessage(websocket.TextMessage, []byte("draining")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "draining" {
		t.Fatalf("echo while draining: %q, %v", msg, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a tunnel was live", err)
	default:
	}
	c.Close()
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Shutdown did not return after the last tunnel ended")
		}
	}
}

func TestDrainTimeoutClosesTunnels(t *testing.T) {
	cfg := configFor(echoUpstream(t, websocket.Upgrader{}))
	cfg.Timeouts.Drain = 5e8 // 500ms
	g := startGateway(t, cfg)
	c := dial(t, g.Addrs()[0].String(), "/", nil)
	done := make(chan error, 1)
	go func() { done <- g.Shutdown(context.Background()) }()
	// 500ms drain, then at most the relay's 1s goodbye grace: the bound
	// only keeps a Shutdown that ignores the drain timeout from hanging.
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Shutdown reported a clean drain with a tunnel left open")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown still waiting 10s into a 500ms drain timeout")
	}
	// A WebSocket-aware goodbye, not a bare TCP close the client would
	// report as 1006.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := c.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("after the drain timeout: %v, want close 1001", err)
	}
}

// After 1,000 tunnels opened, used and closed, the gateway holds no extra
// goroutine or file descriptor.
func TestNoLeaksAfterManyTunnels(t *testing.T) {
	g := startGateway(t, configFor(echoUpstream(t, websocket.Upgrader{})))
	addr := g.Addrs()[0].String()
	// Warm up pools and the first conns so the baseline includes them.
	c := dial(t, addr, "/", nil)
	c.Close()
	waitFor(t, "warm-up tunnel closed", func() bool { return g.ActiveTunnels() == 0 })
	time.Sleep(100 * time.Millisecond)
	baseG, baseFD := goroutinesOutsideWorkerPool(), openFDs(t)

	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	sem := make(chan struct{}, 50)
	for i := range 1000 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := []byte(fmt.Sprint("tunnel ", i))
			if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				errs <- err
				return
			}
			if _, got, err := c.ReadMessage(); err != nil || string(got) != string(msg) {
				errs <- fmt.Errorf("echo %q: %q, %v", msg, got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "tunnels closed", func() bool { return g.ActiveTunnels() == 0 })
	waitFor(t, "goroutines and fds back to baseline", func() bool {
		return goroutinesOutsideWorkerPool() <= baseG+2 && openFDs(t) <= baseFD+2
	})
}

// goroutinesOutsideWorkerPool counts goroutines, leaving out fasthttp's
// idle workers: its pool keeps them for a while on purpose (reused for the
// next connections); they hold no conn.
func goroutinesOutsideWorkerPool() int {
	buf := make([]byte, 8<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	all := strings.Count(stacks, "\n\ngoroutine ") + 1
	return all - strings.Count(stacks, "fasthttp.(*workerPool).workerFunc")
}

func openFDs(t testing.TB) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Logf("%s", buf[:runtime.Stack(buf, true)])
			t.Fatalf("timed out waiting for: %s (goroutines %d)", what, runtime.NumGoroutine())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// drainNow starts a graceful stop of g (what SIGTERM does) whose drain
// timeout is already over, so live tunnels are sent Close 1001 at once. It
// returns a function that waits for Shutdown to return; the test's cleanup
// waits too, so no Shutdown outlives the test.
func drainNow(t testing.TB, g *Gateway) (wait func()) {
	t.Helper()
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	go func() { defer close(done); g.Shutdown(ctx) }()
	wait = func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Shutdown did not return")
		}
	}
	t.Cleanup(wait)
	return wait
}

// closeGoingAwayToClient is Close 1001 as the gateway writes it to a
// client: unmasked, status code only.
var closeGoingAwayToClient = []byte{0x88, 0x02, 0x03, 0xE9}

// checkMaskedGoingAway fails unless b is exactly a masked Close 1001, as
// the gateway writes it to an upstream.
func checkMaskedGoingAway(t testing.TB, b []byte) {
	t.Helper()
	if len(b) != 8 || b[0] != 0x88 || b[1] != 0x82 || b[6]^b[2] != 0x03 || b[7]^b[3] != 0xE9 {
		t.Fatalf("upstream got % x, want a masked Close 1001 and nothing else", b)
	}
}

// A client that sends the start of its first frame in the same write as
// its handshake and the rest later: the frame reaches the upstream whole,
// and a drain then puts Close 1001 after it, not inside it. The access log
// counts that message.
func TestDrainAfterClientFrameBegunInHandshakeWrite(t *testing.T) {
	payload := bytes.Repeat([]byte{0}, 100)
	whole := frame(opText, true, true, payload) // 6 header bytes + 100
	gotFrame := make(chan wsFrame, 1)
	afterFrame := make(chan []byte, 1)
	up := rawUpstream(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte(switchingProtocols(req)))
		f, _ := readFrame(br)
		gotFrame <- f
		rest, _ := io.ReadAll(br)
		afterFrame <- rest
	})
	var log syncbuf.Buffer
	cfg := configFor(up)
	g := startGatewayLogging(t, cfg, &log)
	c, br, resp := rawClient(t, g.Addrs()[0].String(), whole[:10])
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := c.Write(whole[10:]); err != nil {
		t.Fatal(err)
	}
	if f := <-gotFrame; f.op != opText || !f.fin || !bytes.Equal(f.payload, payload) {
		t.Fatalf("upstream got %+v, want the client's 100-byte text frame", f)
	}

	waitDrained := drainNow(t, g)
	checkMaskedGoingAway(t, <-afterFrame)
	if toClient, _ := io.ReadAll(br); !bytes.Equal(toClient, closeGoingAwayToClient) {
		t.Fatalf("client got % x, want % x", toClient, closeGoingAwayToClient)
	}
	c.Close()
	waitDrained()
	if line := lineWith(log.String(), "status=101"); !strings.Contains(line, " msgs_up=1 msgs_down=0 ") {
		t.Fatalf("access log %q, want msgs_up=1 msgs_down=0", line)
	}
}

// A drain while the client's first frame, begun in its handshake write, is
// still unfinished: no Close can be put in the middle of it, so the
// upstream gets the frame's first bytes and then the end of the stream.
func TestDrainInsideClientFrameBegunInHandshakeWrite(t *testing.T) {
	part := frame(opText, true, true, bytes.Repeat([]byte{0}, 100))[:10]
	gotPart := make(chan []byte, 1)
	afterPart := make(chan []byte, 1)
	up := rawUpstream(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte(switchingProtocols(req)))
		b := make([]byte, len(part))
		io.ReadFull(br, b)
		gotPart <- b
		rest, _ := io.ReadAll(br)
		afterPart <- rest
	})
	g := startGateway(t, configFor(up))
	c, br, resp := rawClient(t, g.Addrs()[0].String(), part)
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if b := <-gotPart; !bytes.Equal(b, part) {
		t.Fatalf("upstream got % x, want % x", b, part)
	}

	waitDrained := drainNow(t, g)
	if rest := <-afterPart; len(rest) != 0 {
		t.Fatalf("upstream got % x inside the client's unfinished frame", rest)
	}
	// The other way the stream stands between frames: the client is told.
	if toClient, _ := io.ReadAll(br); !bytes.Equal(toClient, closeGoingAwayToClient) {
		t.Fatalf("client got % x, want % x", toClient, closeGoingAwayToClient)
	}
	c.Close()
	waitDrained()
}

// An upstream that sends its 101 and a 40,000-byte frame in one write: the
// gateway reads part of the frame with the 101 head and the rest in the
// tunnel. Once each client has the whole frame, a drain gives every one
// Close 1001, not a bare close (1006). The access log counts the frame.
func TestDrainAfterUpstreamFrameIn101Write(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 40000)
	up := rawUpstream(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(append([]byte(switchingProtocols(req)), frame(opText, true, false, payload)...))
		io.Copy(io.Discard, br) // until the gateway's Close and end of stream
	})
	var log syncbuf.Buffer
	g := startGatewayLogging(t, configFor(up), &log)
	const clients = 20
	conns, readers := make([]net.Conn, clients), make([]*bufio.Reader, clients)
	for i := range readers {
		c, br, resp := rawClient(t, g.Addrs()[0].String(), nil)
		if resp.StatusCode != 101 {
			t.Fatalf("client %d: status %d", i, resp.StatusCode)
		}
		if f, err := readFrame(br); err != nil || f.op != opText || !bytes.Equal(f.payload, payload) {
			t.Fatalf("client %d: first frame of %d bytes, %v", i, len(f.payload), err)
		}
		conns[i], readers[i] = c, br
	}

	waitDrained := drainNow(t, g)
	for i, br := range readers {
		if toClient, _ := io.ReadAll(br); !bytes.Equal(toClient, closeGoingAwayToClient) {
			t.Errorf("client %d got % x after the frame, want % x", i, toClient, closeGoingAwayToClient)
		}
		conns[i].Close()
	}
	waitDrained()
	if n := strings.Count(log.String(), " msgs_up=0 msgs_down=1 "); n != clients {
		t.Fatalf("%d of %d tunnels logged msgs_down=1:\n%s", n, clients, log.String())
	}
}

// A drain while the upstream's first frame, begun in its 101 write, is
// still unfinished: the client gets the frame's first bytes and then the
// end of the stream, no Close inside the frame.
func TestDrainInsideUpstreamFrameBegunIn101Write(t *testing.T) {
	part := frame(opText, true, false, bytes.Repeat([]byte("x"), 40000))[:1000]
	afterHandshake := make(chan []byte, 1)
	up := rawUpstream(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(append([]byte(switchingProtocols(req)), part...))
		rest, _ := io.ReadAll(br)
		afterHandshake <- rest
	})
	g := startGateway(t, configFor(up))
	c, br, resp := rawClient(t, g.Addrs()[0].String(), nil)
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	b := make([]byte, len(part))
	if _, err := io.ReadFull(br, b); err != nil || !bytes.Equal(b, part) {
		t.Fatalf("client got % x..., %v", b[:16], err)
	}

	waitDrained := drainNow(t, g)
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Fatalf("client got % x inside the upstream's unfinished frame", rest)
	}
	c.Close()
	// The other way the stream stands between frames: the upstream is told.
	checkMaskedGoingAway(t, <-afterHandshake)
	waitDrained()
}
