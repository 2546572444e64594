package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
)

// The request head reaches the upstream as the client wrote it, less
// what a proxy must change: cookies byte for byte, Host as spelled, the
// target as sent, no header the client did not send.
func TestHTTPRequestHeadAsSent(t *testing.T) {
	up, heads := rawHTTPUpstream(t, func(string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" })
	gw := gatewayFor(t, up)
	for _, tc := range []struct{ name, request, want string }{
		{"cookies", "GET /c HTTP/1.1\r\nHost: GW.Test\r\nCookie: sig=\"abc==\"; j={\"a\":1}\r\nX-Mid: 1\r\nCookie: =nameless\r\n\r\n",
			"GET /c HTTP/1.1\r\nHost: GW.Test\r\nCookie: sig=\"abc==\"; j={\"a\":1}\r\nX-Mid: 1\r\nCookie: =nameless\r\n"},
		{"empty query", "GET /? HTTP/1.1\r\nHost: gw.test\r\n\r\n", "GET /? HTTP/1.1\r\nHost: gw.test\r\n"},
		{"DELETE", "DELETE /r HTTP/1.1\r\nHost: gw.test\r\n\r\n", "DELETE /r HTTP/1.1\r\nHost: gw.test\r\n"},
		{"OPTIONS", "OPTIONS /r HTTP/1.1\r\nHost: gw.test\r\n\r\n", "OPTIONS /r HTTP/1.1\r\nHost: gw.test\r\n"},
		{"userinfo", "GET http://u:p@gw.test/p HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer t\r\n\r\n",
			"GET /p HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer t\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Connection: close, so rawRequest sees the end at once (the
			// line is hop-by-hop: the upstream never sees it).
			req := strings.TrimSuffix(tc.request, "\r\n") + "Connection: close\r\n\r\n"
			if out := rawRequest(t, gw, req); !strings.HasPrefix(out, "HTTP/1.1 200 ") {
				t.Fatalf("client got %q", out)
			}
			if head := recvHead(t, heads); !strings.HasPrefix(head, tc.want+"X-Forwarded-For: ") {
				t.Fatalf("upstream got:\n%s\nwant it to start:\n%s", head, tc.want)
			}
		})
	}
	// A body without Content-Type gets none.
	if out := rawRequest(t, gw, "POST /p HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"); !strings.HasPrefix(out, "HTTP/1.1 200 ") {
		t.Fatalf("client got %q", out)
	}
	if head := recvHead(t, heads); len(headerValues(head, "Content-Type")) > 0 {
		t.Fatalf("upstream got a Content-Type the client did not send:\n%s", head)
	}
}

// Header lines a backend could read differently from the gateway (an
// obs-fold continuation, a name with a space) are refused with 400 and
// never reach an upstream.
func TestHTTPAmbiguousHeaderLinesRefused(t *testing.T) {
	up, heads := rawHTTPUpstream(t, func(string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" })
	gw := gatewayFor(t, up)
	for _, req := range []string{
		"GET /a HTTP/1.1\r\nHost: gw.test\r\nX-A: a\r\n X-Forwarded-For: 6.6.6.6\r\n\r\n",
		"GET /b HTTP/1.1\r\nHost: gw.test\r\nX Forwarded-For: 6.6.6.6\r\n\r\n",
	} {
		if out := rawRequest(t, gw, req); !strings.HasPrefix(out, "HTTP/1.1 400 ") || !strings.Contains(out, "malformed request") {
			t.Fatalf("%q: client got %q", req, out)
		}
	}
	select {
	case h := <-heads:
		t.Fatalf("the upstream received %q", h)
	default:
	}
}

// A backend that answers before it read the body (413 for an upload too
// large) and closes: the client gets that answer, not a 502.
func TestHTTPEarlyAnswerRelayed(t *testing.T) {
	up := hostileUpstream(t, func(c net.Conn, _ *bufio.Reader, _ string) bool {
		io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
		return false // closed with the body unread
	})
	gw := gatewayFor(t, up)
	c := dialRaw(t, gw, 15*time.Second)
	const size = 64 << 20
	io.WriteString(c, fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: %d\r\n\r\n", size))
	// The client keeps sending (bounded) while it waits for the answer,
	// as a browser does.
	go func() {
		chunk := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || string(body) != "too large" {
		t.Fatalf("client got %d %q, want the upstream's 413", resp.StatusCode, body)
	}
}

// configIdle is configFor with timeouts.idle set.
func configIdle(idle time.Duration, servers ...string) *config.Config {
	cfg := configFor(servers...)
	cfg.Timeouts.Idle = config.Duration(idle)
	return cfg
}

// An upload that keeps progressing is never cut by timeouts.idle, however
// long it takes in all: idle time counts from the last byte.
func TestHTTPSlowUploadProgressing(t *testing.T) {
	up, ended := uploadRecorder(t)
	gw := startGateway(t, configIdle(2*time.Second, up)).Addrs()[0].String()
	c := dialRaw(t, gw, 30*time.Second)
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n")
	// 12 chunks 250 ms apart: 3 s in all, more than the idle timeout.
	for range 12 {
		time.Sleep(250 * time.Millisecond)
		io.WriteString(c, "5\r\nhello\r\n")
	}
	io.WriteString(c, "0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(body) != "for upload" {
		t.Fatalf("client got %d %q", resp.StatusCode, body)
	}
	if err := <-ended; err != nil {
		t.Fatalf("upstream: %v", err)
	}
}

// A client that stops sending its body gets 408 after timeouts.idle (it is
// the client that is slow, not the upstream), and a malformed chunked body
// is the client's too: 400.
func TestHTTPClientBodyFailuresAreTheClients(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"stalled", "5\r\nhello\r\n", 408},
		{"bad chunk size", "5\r\nhello\r\nzz\r\n", 400},
		{"bare LF", "5\nhello\r\n0\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, _ := uploadRecorder(t)
			gw := startGateway(t, configIdle(time.Second, up)).Addrs()[0].String()
			c := dialRaw(t, gw, 15*time.Second)
			io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"+tc.body)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("client got %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
}

// Trailer fields of a chunked answer reach a client that accepts them
// (TE: trailers), which the upstream is told; framing fields never do.
func TestHTTPTrailersRelayed(t *testing.T) {
	up, heads := rawHTTPUpstream(t, func(string) string {
		return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 99\r\n\r\n"
	})
	gw := gatewayFor(t, up)
	for _, accepts := range []bool{true, false} {
		c := dialRaw(t, gw, 15*time.Second)
		te := ""
		if accepts {
			te = "TE: trailers\r\n"
		}
		io.WriteString(c, "GET /t HTTP/1.1\r\nHost: gw.test\r\n"+te+"\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || string(body) != "hello" {
			t.Fatalf("body %q, %v", body, err)
		}
		if got := resp.Trailer.Get("X-Checksum"); (got == "abc") != accepts {
			t.Errorf("TE trailers %v: the client got trailer X-Checksum %q", accepts, got)
		}
		if got := resp.Trailer.Get("Content-Length"); got != "" {
			t.Errorf("a Content-Length trailer was relayed: %q", got)
		}
		if head := recvHead(t, heads); (len(headerValues(head, "TE")) > 0) != accepts {
			t.Errorf("TE trailers %v: the upstream got:\n%s", accepts, head)
		}
	}
}

// A Content-Length body that comes in pieces is relayed as it comes, not
// held in the gateway's buffer until the whole body is there.
func TestHTTPLengthBodyRelayedAsItArrives(t *testing.T) {
	rest := make(chan struct{})
	up := hostileUpstream(t, func(c net.Conn, _ *bufio.Reader, _ string) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
		<-rest
		io.WriteString(c, "world")
		return true
	})
	gw := gatewayFor(t, up)
	c, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer close(rest)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: gw.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no response head while the body is incomplete: %v", err)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "hello" {
		t.Fatalf("the first half of the body did not come before the second was sent: %q, %v", first, err)
	}
}
