package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
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
	waitFor(t, "listener closed", func() bool {
		probe, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
		if err == nil {
			probe.Close() // accepted before the listener closed
		}
		return err != nil
	})
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
