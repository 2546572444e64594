package tests

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"golang.org/x/sys/unix"
)

// These tests run the gateway out of file descriptors. Its open-files
// limit is lowered from outside with prlimit(2) once it is up (Go raises
// the soft limit to the hard one at start, so both are set), which
// touches neither the test process nor the other gateways running in
// parallel. The limit is set just above the highest descriptor open, so
// every descriptor the gateway opens later counts against the headroom
// the test chose, and the test knows how many are left from the count in
// /proc/PID/fd. Idle client conns, which the gateway holds while it waits
// for their request head, take up what must not be free.

// fdConfig fronts a WebSocket echo upstream (host ws.repo) and a plain
// HTTP upstream (any other host). A server that fails is out for an hour,
// so a request that succeeds after a failure proves it was not counted;
// request heads may take as long, so idle conns stay open.
func fdConfig(listen, wsAddr, httpAddr string) string {
	return fmt.Sprintf(`listeners:
  - address: %s
routes:
  - host: ws.repo
    upstream: ws_echo
  - upstream: web
upstreams:
  ws_echo:
    fail_timeout: 1h
    servers:
      - address: %s
  web:
    fail_timeout: 1h
    servers:
      - address: %s
timeouts:
  handshake: 1h
`, listen, wsAddr, httpAddr)
}

// openFDs returns the descriptors pid has open.
func openFDs(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	fds := make([]int, 0, len(entries))
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			t.Fatalf("/proc/%d/fd/%s: %v", pid, e.Name(), err)
		}
		fds = append(fds, fd)
	}
	return fds
}

// limitFDs sets p's open-files limit so that exactly headroom more
// descriptors can be opened than are open now, and returns how many p
// holds when none is left. p must be idle: nothing of it may open or
// close a descriptor meanwhile.
func limitFDs(t *testing.T, p *proc, headroom int) int {
	t.Helper()
	pid := p.cmd.Process.Pid
	open := map[int]bool{}
	for _, fd := range openFDs(t, pid) {
		open[fd] = true
	}
	// New descriptors take the lowest free numbers below the limit:
	// choose the limit that leaves headroom of them. Descriptors at or
	// above it (inherited from the test's environment) stay open.
	limit, free := 0, 0
	for free < headroom {
		if !open[limit] {
			free++
		}
		limit++
	}
	rl := unix.Rlimit{Cur: uint64(limit), Max: uint64(limit)}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &rl, nil); err != nil {
		t.Fatalf("prlimit(%d, NOFILE, %d): %v", pid, limit, err)
	}
	return len(open) + headroom
}

// waitFDs waits until p has n descriptors open.
func waitFDs(t *testing.T, p *proc, n int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := len(openFDs(t, p.cmd.Process.Pid))
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d descriptors open after 10s, want %d", what, got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// idleConns opens n connections to gw that send nothing: each holds one
// of the gateway's descriptors once accepted.
func idleConns(t *testing.T, gw string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.DialTimeout("tcp", gw, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns
}

// releaseConns ends idle conns and returns once the gateway has closed
// each: it answers our FIN with its own only after close(2), so its
// descriptors are free when this returns.
func releaseConns(t *testing.T, conns []net.Conn) {
	t.Helper()
	for _, c := range conns {
		c.(*net.TCPConn).CloseWrite()
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("waiting for the gateway to close an idle conn: %v (read %d bytes)", err, n)
		}
		c.Close()
	}
}

// wsOver does a WebSocket handshake for url on conn, which is connected
// to the gateway.
func wsOver(conn net.Conn, url string) (*websocket.Conn, error) {
	d := websocket.Dialer{
		NetDial:          func(string, string) (net.Conn, error) { return conn, nil },
		HandshakeTimeout: 20 * time.Second,
	}
	c, resp, err := d.Dial(url, nil)
	if err != nil && resp != nil {
		body, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("%w: %s %s", err, resp.Status, strings.TrimSpace(string(body)))
	}
	return c, err
}

// Out of descriptors, the gateway stops accepting but keeps serving the
// tunnels it has; once descriptors are free again it accepts the
// connection that waited in the listen queue, and new ones, without a
// restart. The accept failure is logged once, not once per retry.
func TestAcceptRecoversAfterDescriptorsRunOut(t *testing.T) {
	t.Parallel()
	wsAddr := echoUpstream(t)
	gw := freeAddr(t)
	p := startGateway(t, gw, fdConfig(gw, wsAddr, "127.0.0.1:9"))

	tunnel := mustDialWS(t, gw, "ws://ws.repo/")
	echo(t, tunnel, "before")

	const headroom = 6
	full := limitFDs(t, p, headroom)
	idle := idleConns(t, gw, headroom)
	waitFDs(t, p, full, "idle conns accepted up to the limit")

	// This one stays in the listen queue: accept(2) fails with EMFILE.
	queued, err := net.DialTimeout("tcp", gw, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	p.waitOutput(t, p.stderr, "too many open files", 10*time.Second)
	echo(t, tunnel, "while accept fails") // existing tunnels carry on

	releaseConns(t, idle)
	c, err := wsOver(queued, "ws://ws.repo/queued")
	if err != nil {
		t.Fatalf("handshake on the conn queued while descriptors ran out, after they were freed: %v", err)
	}
	defer c.Close()
	echo(t, c, "queued")
	fresh := mustDialWS(t, gw, "ws://ws.repo/fresh")
	echo(t, fresh, "fresh")
	echo(t, tunnel, "after")

	if n := strings.Count(p.stderr.String(), "too many open files"); n != 1 {
		t.Errorf("the accept failure was logged %d times, want once for the whole run of failures", n)
	}
	if p.exited() {
		t.Fatal("wsgate exited")
	}
}

// A dial that fails because the gateway is out of descriptors is not the
// server's failure: the client gets 503, the error log says it is local,
// and the server is not taken out (fail_timeout is an hour here), so the
// next request after descriptors are freed reaches it. Both the WebSocket
// and the plain HTTP path.
func TestLocalDialFailureDoesNotMarkServerDown(t *testing.T) {
	t.Parallel()
	wsAddr, httpAddr := echoUpstream(t), httpUpstream(t)
	gw := freeAddr(t)
	p := startGateway(t, gw, fdConfig(gw, wsAddr, httpAddr))

	// One descriptor left: accept takes it, the dial to the upstream
	// fails with EMFILE.
	const headroom = 4
	full := limitFDs(t, p, headroom)
	idle := idleConns(t, gw, headroom-1)
	waitFDs(t, p, full-1, "idle conns accepted")

	conn, err := net.DialTimeout("tcp", gw, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = wsOver(conn, "ws://ws.repo/")
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "too many open files") {
		t.Errorf("handshake with no descriptor left to dial with: %v; want 503 naming the local cause", err)
	}
	waitFDs(t, p, full-1, "the refused handshake's conn closed")
	status, body := httpGet(t, gw, "plain.test", "/")
	if status != 503 || !strings.Contains(body, "too many open files") {
		t.Errorf("GET with no descriptor left to dial with: %d %q; want 503 naming the local cause", status, body)
	}
	waitFDs(t, p, full-1, "the refused request's conn closed")

	releaseConns(t, idle)
	c := mustDialWS(t, gw, "ws://ws.repo/")
	echo(t, c, "server was not marked down")
	if status, body := httpGet(t, gw, "plain.test", "/after"); status != 200 {
		t.Errorf("GET after descriptors were freed: %d %q; want 200 (the server was not marked down)", status, body)
	}

	stderr := p.stderr.String()
	for _, up := range []string{"upstream ws_echo server " + wsAddr, "upstream web server " + httpAddr} {
		if line := lineContaining(stderr, up); !strings.Contains(line, "local failure") {
			t.Errorf("error log line for %s: %q; want it to say the failure is local", up, line)
		}
	}
}

// A plain tunnel takes two descriptors, the client's and the upstream's,
// and nothing more even for a moment: the event loop that accepted the
// client connects to the upstream and carries the tunnel with the sockets
// it made, where handing Go conns to the relay took a duplicate of each.
// With exactly two descriptors left, a tunnel starts and echoes.
func TestTunnelAtTheDescriptorLimit(t *testing.T) {
	t.Parallel()
	wsAddr := echoUpstream(t)
	gw := freeAddr(t)
	p := startGateway(t, gw, fdConfig(gw, wsAddr, "127.0.0.1:9"))

	const headroom = 4
	full := limitFDs(t, p, headroom)
	idleConns(t, gw, headroom-2)
	waitFDs(t, p, full-2, "idle conns accepted")

	c := mustDialWS(t, gw, "ws://ws.repo/limit")
	echo(t, c, "at the limit")
	waitFDs(t, p, full, "the tunnel's two sockets")
	if strings.Contains(p.stderr.String(), "too many open files") {
		t.Errorf("the tunnel ran out of descriptors:\n%s", p.stderr.String())
	}
}
