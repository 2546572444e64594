package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/httpbody"
	"github.com/wsgate/wsgate/internal/syncbuf"
	"golang.org/x/sys/unix"
)

// hostileUpstream is a raw HTTP/1.1 upstream for misbehaving-backend
// tests. It reads each request head on a conn and calls serve with the
// conn, its reader and the head; serve writes whatever the test wants,
// and returns false to stop serving the conn (which is then closed).
func hostileUpstream(t *testing.T, serve func(c net.Conn, br *bufio.Reader, head string) bool) string {
	t.Helper()
	ln := listenLocal(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					head, err := readHead(br)
					if err != nil || !serve(c, br, head) {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// requestPath is the path of a request head's start line.
func requestPath(head string) string {
	f := strings.Fields(head)
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// ownAnswer is the well-behaved answer to a request for path.
func ownAnswer(path string) string {
	body := "for " + path
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// delivered waits until the peer of c has acknowledged every byte written
// to it (nothing left in c's send queue): on loopback the bytes are then
// in the peer's receive queue, where the gateway's next look at the conn
// will find them.
func delivered(t *testing.T, c net.Conn) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var queued int
		rc.Control(func(fd uintptr) { queued, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if err != nil {
			t.Error(err)
			return
		}
		if queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Error("bytes written to the gateway were never acknowledged")
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// exchange sends one request through the gateway on a connection of its
// own and returns the status and body the client got.
func exchange(t *testing.T, gw, method, path, extra string) (int, string) {
	t.Helper()
	c := dialRaw(t, gw, 15*time.Second)
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: gw.test\r\n%s\r\n", method, path, extra)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp.StatusCode, string(body)
}

// Bytes a backend sends beyond its answer (a body on a HEAD or a 204,
// bytes past Content-Length, an unsolicited 408) stay on the upstream
// connection. Clients that come after, each on a connection of its own,
// must get exactly their own answers: never those bytes, never another
// client's answer.
func TestUpstreamLeftoversNeverReachAnotherClient(t *testing.T) {
	const injected = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"
	cases := []struct {
		name, method string
		answer       string // to the first request, with the head
		later        string // written once the first client has its answer
		status       int
	}{
		{"HEAD with a body in the same write", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n" + injected, "", 200},
		{"HEAD with a late body", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n", injected, 200},
		{"204 with a late body", "GET", "HTTP/1.1 204 No Content\r\n\r\n", injected, 204},
		{"304 with a body", "GET", "HTTP/1.1 304 Not Modified\r\n\r\n" + injected, "", 304},
		{"body longer than Content-Length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfor /a" + injected, "", 200},
		{"body longer than Content-Length, late", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfor /a", injected, 200},
		{"chunked body followed by more", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfor /a\r\n0\r\n\r\n" + injected, "", 200},
		{"unsolicited 408", "GET", ownAnswer("/a"), "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inject, injectedDone := make(chan struct{}), make(chan struct{})
			up := hostileUpstream(t, func(c net.Conn, _ *bufio.Reader, head string) bool {
				path := requestPath(head)
				if path != "/a" {
					io.WriteString(c, ownAnswer(path))
					return true
				}
				io.WriteString(c, tc.answer)
				if tc.later == "" {
					return true
				}
				<-inject
				io.WriteString(c, tc.later)
				delivered(t, c)
				close(injectedDone)
				return true
			})
			gw := gatewayFor(t, up)
			if status, _ := exchange(t, gw, tc.method, "/a", ""); status != tc.status {
				t.Fatalf("client A: status %d, want %d", status, tc.status)
			}
			if tc.later != "" {
				close(inject)
				<-injectedDone
			}
			for _, path := range []string{"/b-secret", "/c"} {
				if status, body := exchange(t, gw, "GET", path, ""); status != 200 || body != "for "+path {
					t.Fatalf("client asking for %s got %d %q", path, status, body)
				}
			}
		})
	}
}

// A 101 (or another interim code than 100 and 103) answering a request
// that asked for no upgrade: the client gets a 502, and the connection the
// backend believes switched never carries another client's request.
func TestUnexpectedInterimResponse(t *testing.T) {
	for _, interim := range []string{
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"HTTP/1.1 102 Processing\r\n\r\n",
	} {
		t.Run(interim[9:12], func(t *testing.T) {
			leaked := make(chan string, 1)
			up := hostileUpstream(t, func(c net.Conn, br *bufio.Reader, head string) bool {
				path := requestPath(head)
				if path != "/a" {
					io.WriteString(c, ownAnswer(path))
					return true
				}
				io.WriteString(c, interim)
				// The backend now treats the conn as switched: whatever
				// comes next is reported, until the gateway closes it.
				b, _ := io.ReadAll(br)
				leaked <- string(b)
				return false
			})
			gw := gatewayFor(t, up)
			if status, body := exchange(t, gw, "GET", "/a", ""); status != 502 {
				t.Fatalf("client A: %d %q, want 502", status, body)
			}
			if status, body := exchange(t, gw, "GET", "/b", "Cookie: session=b-secret\r\n"); status != 200 || body != "for /b" {
				t.Fatalf("client B: %d %q", status, body)
			}
			select {
			case b := <-leaked:
				if b != "" {
					t.Fatalf("the switched connection received %q", b)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the gateway kept the switched connection open")
			}
		})
	}
}

// 100 Continue and 103 Early Hints before the final answer are skipped;
// the final answer reaches the client and the conn stays usable.
func TestInterimContinueAndEarlyHints(t *testing.T) {
	up := hostileUpstream(t, func(c net.Conn, _ *bufio.Reader, head string) bool {
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+ownAnswer(requestPath(head)))
		return true
	})
	gw := gatewayFor(t, up)
	for _, path := range []string{"/a", "/b"} {
		if status, body := exchange(t, gw, "GET", path, ""); status != 200 || body != "for "+path {
			t.Fatalf("%s: %d %q", path, status, body)
		}
	}
}

// waitForLog waits until the buffer holds want.
func waitForLog(t *testing.T, log *syncbuf.Buffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log has no %q:\n%s", want, log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An upstream body cut short (a chunked one at a chunk boundary, or fewer
// bytes than its Content-Length) reaches the client without its end, and
// the logs say the upstream failed.
func TestUpstreamBodyCutShort(t *testing.T) {
	for _, tc := range []struct{ name, answer string }{
		{"chunked at a chunk boundary", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
		{"chunked inside a chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello"},
		{"Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := hostileUpstream(t, func(c net.Conn, _ *bufio.Reader, _ string) bool {
				io.WriteString(c, tc.answer)
				return false
			})
			var access, errs syncbuf.Buffer
			gw := startGatewayOpts(t, configFor(up), Options{AccessLog: &access, ErrorLog: &errs}).Addrs()[0].String()
			c := dialRaw(t, gw, 15*time.Second)
			io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: gw.test\r\n\r\n")
			raw, _ := io.ReadAll(c)
			if !strings.Contains(string(raw), "hello") && !strings.Contains(string(raw), "0123456789") {
				t.Fatalf("the client did not get the bytes the upstream sent before the cut: %q", raw)
			}
			if strings.HasSuffix(string(raw), "0\r\n\r\n") {
				t.Fatalf("the client got a complete chunked body: %q", raw)
			}
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(raw))), nil)
			if err == nil {
				body, err := io.ReadAll(resp.Body)
				if err == nil {
					t.Fatalf("the client read a complete response (%d, %q) from %q", resp.StatusCode, body, raw)
				}
			}
			waitForLog(t, &access, "failed=upstream")
			waitForLog(t, &errs, "the client's response is cut short")
		})
	}
}

// uploadRecorder is an upstream that reads a request body by its framing
// and reports how it ended; a complete body gets a 200.
func uploadRecorder(t *testing.T) (string, <-chan error) {
	ended := make(chan error, 1)
	return hostileUpstream(t, func(c net.Conn, br *bufio.Reader, head string) bool {
		var body io.Reader
		if len(headerValues(head, "Transfer-Encoding")) > 0 {
			body = httpbody.NewChunked(br)
		} else {
			var n int64
			fmt.Sscan(headerValues(head, "Content-Length")[0], &n)
			body = httpbody.NewFixed(br, n)
		}
		_, err := io.Copy(io.Discard, body)
		ended <- err
		if err == nil {
			io.WriteString(c, ownAnswer("upload"))
		}
		return err == nil
	}), ended
}

// A request body the client cuts short reaches the upstream without its
// end (no last chunk; fewer bytes than Content-Length, then a close): the
// upstream can never take it for a whole upload. The client, which may
// still read, gets a 400; the error log names the client.
func TestClientBodyCutShort(t *testing.T) {
	chunk := strings.Repeat("u", 8000)
	chunked := ""
	for range 20 {
		chunked += fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk)
	}
	for _, tc := range []struct{ name, head, body string }{
		{"chunked at a chunk boundary", "Transfer-Encoding: chunked\r\n", chunked},
		{"chunked inside a chunk", "Transfer-Encoding: chunked\r\n", chunked + "1f40\r\nuuu"},
		{"Content-Length", "Content-Length: 200000\r\n", strings.Repeat("u", 160000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, ended := uploadRecorder(t)
			var errs syncbuf.Buffer
			gw := startGatewayOpts(t, configFor(up), Options{AccessLog: io.Discard, ErrorLog: &errs}).Addrs()[0].String()
			c := dialRaw(t, gw, 15*time.Second)
			io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: gw.test\r\n"+tc.head+"\r\n"+tc.body)
			c.(*net.TCPConn).CloseWrite()
			select {
			case err := <-ended:
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("the upstream's body ended with %v, want a cut", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the upstream's body never ended")
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			if resp.StatusCode != 400 {
				t.Fatalf("client got %d, want 400", resp.StatusCode)
			}
			waitForLog(t, &errs, "client 127.0.0.1:")
		})
	}
}

// A complete chunked upload, trailer fields included, still goes through
// whole, and the conn is used again.
func TestChunkedUploadComplete(t *testing.T) {
	up, ended := uploadRecorder(t)
	gw := gatewayFor(t, up)
	for i := range 2 {
		status, body := exchange(t, gw, "POST", "/upload", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n")
		if status != 200 || body != "for upload" {
			t.Fatalf("upload %d: %d %q", i, status, body)
		}
		if err := <-ended; err != nil {
			t.Fatalf("upload %d: upstream read %v", i, err)
		}
	}
}

// BenchmarkHTTPKeepAlive is one small GET through the gateway on a kept
// client conn and a pooled upstream conn: the plain path's cost per
// request, the reuse check included (allocations are the gateway's, the
// client's and the upstream's together).
func BenchmarkHTTPKeepAlive(b *testing.B) {
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello") }}
	go up.Serve(upLn)
	defer up.Shutdown()
	gw := gatewayFor(b, upLn.Addr().String())
	c := &fasthttp.HostClient{Addr: gw, MaxConns: 1}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI("http://" + gw + "/bench")
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil || string(resp.Body()) != "hello" {
			b.Fatalf("%v %q", err, resp.Body())
		}
	}
}

// Uploads one after another on one client connection: the connection
// stays open between them (what the gateway keeps per request to follow
// an upload must not end the connection with the request).
func TestUploadsShareAClientConn(t *testing.T) {
	up, ended := uploadRecorder(t)
	gw := gatewayFor(t, up)
	c := dialRaw(t, gw, 15*time.Second)
	br := bufio.NewReader(c)
	for i, req := range []string{
		"POST /upload HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST /upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello",
		"POST /upload HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	} {
		io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
		if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(body) != "for upload" {
			t.Fatalf("upload %d: %d %q", i, resp.StatusCode, body)
		}
		if err := <-ended; err != nil {
			t.Fatalf("upload %d: upstream read %v", i, err)
		}
	}
}

// Over TLS, the end of the client's stream is its close_notify: an upload
// cut at a chunk boundary and then ended that way reaches the upstream
// without its last chunk, and a whole upload followed at once by a
// close_notify (crypto/tls may return both in one read) goes through
// whole.
func TestClientBodyEndsWithCloseNotify(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	for _, tc := range []struct {
		name, body string
		whole      bool
	}{
		{"cut at a chunk boundary", "5\r\nhello\r\n", false},
		{"whole", "5\r\nhello\r\n0\r\n\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, ended := uploadRecorder(t)
			g := startTLSGateway(t, up, &config.TLS{Certificates: []config.Certificate{ca.server(t, "gw", 1, "gw.test")}}, nil)
			// TLS 1.2, where crypto/tls hands over the last bytes and the
			// close_notify behind them in one read (tlsterm's test covers
			// that read itself).
			c, err := tls.Dial("tcp", g.Addrs()[0].String(), &tls.Config{RootCAs: ca.Pool, ServerName: "gw.test", MaxVersion: tls.VersionTLS12})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(15 * time.Second))
			io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"+tc.body)
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-ended:
				if tc.whole && err != nil {
					t.Fatalf("the upstream's body ended with %v, want it whole", err)
				}
				if !tc.whole && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("the upstream's body ended with %v, want a cut", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the upstream's body never ended")
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			if want := map[bool]int{true: 200, false: 400}[tc.whole]; resp.StatusCode != want {
				t.Fatalf("client got %d, want %d", resp.StatusCode, want)
			}
		})
	}
}
