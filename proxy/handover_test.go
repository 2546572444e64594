package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
)

// fasthttp skips a hijack handler the request handler registered when it
// cannot flush the answer still buffered for an earlier pipelined request:
// the client reset its connection. What the handler was due to take over
// (the upstream conn, the server's lease, the count a drain waits on) must
// then be released by the close of the client conn: the upstream sees its
// conn closed, the lease ends, and a drain does not wait for it.
func TestHijackSkippedReleasesHandover(t *testing.T) {
	for _, tc := range []struct {
		name, request, answer string
	}{
		// A valid 101, to be carried by a tunnel.
		{"websocket", handshakeRequest("gw.test", "/late"),
			"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Accept: " + AcceptKey(testKey) + "\r\n\r\n"},
		// A body of unknown length to an HTTP/1.0 client, to be relayed
		// until the close on the hijacked conn (relayUntilClose).
		{"http/1.0 stream", "GET /late HTTP/1.0\r\nHost: gw.test\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			arrived, answer, upstreamClosed := make(chan struct{}), make(chan struct{}), make(chan struct{})
			up := hostileUpstream(t, func(c net.Conn, br *bufio.Reader, head string) bool {
				if requestPath(head) == "/first" {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					return true
				}
				close(arrived)
				select {
				case <-answer:
				case <-time.After(time.Minute):
					return false
				}
				io.WriteString(c, tc.answer)
				c.SetReadDeadline(time.Now().Add(time.Minute))
				io.Copy(io.Discard, br)
				close(upstreamClosed)
				return false
			})
			cfg := configFor(up)
			cfg.Timeouts.Drain = config.Duration(time.Minute) // a drain waiting for the handover would stand out
			g := startGateway(t, cfg)
			addr := g.Addrs()[0].String()
			srv := g.gen.Load().router.Match("gw.test", "/").Pool.Servers()[0]

			// Both requests in one write: fasthttp keeps the answer to the
			// first buffered while the second is already read, and
			// flushes it only at the second's hijack.
			c := dialRaw(t, addr, 30*time.Second).(*net.TCPConn)
			if _, err := io.WriteString(c, "GET /first HTTP/1.1\r\nHost: gw.test\r\n\r\n"+tc.request); err != nil {
				t.Fatal(err)
			}
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("the second request never reached the upstream")
			}
			// Reset the client conn and wait until the gateway's side of it
			// is gone, so the flush at the hijack fails.
			c.SetLinger(0)
			gatewaySide := procNetTCPKey(c.RemoteAddr()) + " " + procNetTCPKey(c.LocalAddr())
			c.Close()
			waitFor(t, "the gateway's side of the reset conn gone", func() bool { return !procNetTCPHas(t, gatewaySide) })
			close(answer)

			select {
			case <-upstreamClosed:
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream conn is still open 10s after the client conn closed: the handover leaked")
			}
			waitFor(t, "the server's lease released", func() bool { return srv.Active() == 0 })
			// Nothing is left to drain: Shutdown must not wait for its
			// deadline (a drain ends at its context's end with no error).
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := g.Shutdown(ctx)
			switch {
			case err != nil:
				t.Fatalf("drain: %v", err)
			case ctx.Err() != nil:
				t.Fatal("the drain ran to its 10s deadline: it waited for a handover that will never come")
			}
		})
	}
}

// procNetTCPKey is addr as /proc/net/tcp writes an IPv4 address.
func procNetTCPKey(addr net.Addr) string {
	a := addr.(*net.TCPAddr)
	return fmt.Sprintf("%08X:%04X", binary.LittleEndian.Uint32(a.IP.To4()), a.Port)
}

// procNetTCPHas reports whether a socket with "local remote" (as
// procNetTCPKey writes them) is in the kernel's TCP table: a socket that
// took a reset has left it.
func procNetTCPHas(t testing.TB, localRemote string) bool {
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[1]+" "+f[2] == localRemote {
			return true
		}
	}
	return false
}
