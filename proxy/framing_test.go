package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
)

// rawExchange sends request on a connection of its own and returns the
// response head as bytes and a reader at the start of the body. The
// connection is closed when the test ends.
func rawExchange(t *testing.T, gw, request string) (head string, c net.Conn, br *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	br = bufio.NewReader(c)
	head, err = readHead(br)
	if err != nil {
		t.Fatalf("response head: %v", err)
	}
	return head, c, br
}

// An HTTP/1.0 client cannot read chunked (RFC 9112 section 6.1): a body
// whose length the upstream did not give reaches it as is, ended by the
// close of the connection. A known length is relayed as Content-Length,
// and then the connection may stay open for a client that asked for it.
func TestHTTP10ClientFraming(t *testing.T) {
	const body = "data: 1\n\n"
	answers := map[string]string{
		"chunked":        fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body),
		"close":          "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body,
		"content-length": fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body),
	}
	up := hostileUpstream(t, func(c net.Conn, _ *bufio.Reader, head string) bool {
		framing := strings.TrimPrefix(requestPath(head), "/")
		io.WriteString(c, answers[framing])
		return framing != "close"
	})
	gw := gatewayFor(t, up)
	for _, tc := range []struct {
		framing, connection string
		wantLength          bool // Content-Length, and the connection stays open
	}{
		{"chunked", "", false},
		{"chunked", "Connection: keep-alive\r\n", false},
		{"close", "Connection: keep-alive\r\n", false},
		{"content-length", "Connection: keep-alive\r\n", true},
	} {
		t.Run(tc.framing+" "+strings.TrimSpace(tc.connection), func(t *testing.T) {
			head, c, br := rawExchange(t, gw, "GET /"+tc.framing+" HTTP/1.0\r\nHost: gw.test\r\n"+tc.connection+"\r\n")
			if te := headerValues(head, "Transfer-Encoding"); len(te) > 0 {
				t.Fatalf("an HTTP/1.0 client got Transfer-Encoding %q:\n%s", te, head)
			}
			if !strings.HasPrefix(head, "HTTP/1.1 200 ") {
				t.Fatalf("status line: %q", head)
			}
			if !tc.wantLength {
				if cl := headerValues(head, "Content-Length"); len(cl) > 0 {
					t.Fatalf("Content-Length %q on a body of unknown length", cl)
				}
				if cn := headerValues(head, "Connection"); len(cn) != 1 || !strings.EqualFold(cn[0], "close") {
					t.Errorf("Connection %q, want close", cn)
				}
				got, err := io.ReadAll(br)
				if err != nil {
					t.Fatalf("body not ended by a close: %q, %v", got, err)
				}
				if string(got) != body {
					t.Fatalf("body %q, want %q", got, body)
				}
				return
			}
			if cl := headerValues(head, "Content-Length"); len(cl) != 1 || cl[0] != fmt.Sprint(len(body)) {
				t.Fatalf("Content-Length %q:\n%s", cl, head)
			}
			got := make([]byte, len(body))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != body {
				t.Fatalf("body %q, %v", got, err)
			}
			// The connection is kept: a second request gets its answer.
			io.WriteString(c, "GET /content-length HTTP/1.0\r\nHost: gw.test\r\nConnection: keep-alive\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("second request on the kept connection: %v", err)
			}
			if got := readAll(t, resp); got != body {
				t.Fatalf("second body %q", got)
			}
		})
	}
}

// An HTTP/1.0 upstream's answer goes to the client in the gateway's own
// HTTP/1.1, framed so the client can tell where it ends.
func TestHTTP10UpstreamAnswer(t *testing.T) {
	up := hostileUpstream(t, func(c net.Conn, _ *bufio.Reader, head string) bool {
		if requestPath(head) == "/length" {
			io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello")
		} else {
			io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello")
		}
		return false // HTTP/1.0 without keep-alive: the close ends the body
	})
	gw := gatewayFor(t, up)
	c := dialRaw(t, gw, 15*time.Second)
	br := bufio.NewReader(c)
	for _, path := range []string{"/until-close", "/length", "/until-close"} {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gw.test\r\n\r\n", path)
		line, err := br.Peek(len("HTTP/1.1 200 "))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if string(line) != "HTTP/1.1 200 " {
			t.Fatalf("%s: status line begins %q, want HTTP/1.1 200", path, line)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if body := readAll(t, resp); body != "hello" {
			t.Fatalf("%s: body %q", path, body)
		}
	}
}

// An HTTP/1.0 answer with Transfer-Encoding has faulty framing (RFC 9112
// section 6.1): a chunked body is read as chunked, over any
// Content-Length, and the upstream conn is closed after it, even one the
// server keeps open; the chunk framing never reaches the client as data.
// Another transfer coding cannot be read: 502.
func TestHTTP10UpstreamTransferEncoding(t *testing.T) {
	const chunks = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
	for _, tc := range []struct {
		name, answer string
		keepOpen     bool // the server waits for the gateway to close
		want         int
	}{
		{"closed after", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks, false, 200},
		{"kept open", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\nTransfer-Encoding: Chunked\r\n\r\n" + chunks, true, 200},
		{"other coding", "HTTP/1.0 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunks, false, 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upClosed := make(chan struct{})
			up := hostileUpstream(t, func(c net.Conn, br *bufio.Reader, _ string) bool {
				io.WriteString(c, tc.answer)
				if tc.keepOpen {
					io.Copy(io.Discard, br) // until the gateway closes
					close(upClosed)
				}
				return false
			})
			gw := gatewayFor(t, up)
			head, _, br := rawExchange(t, gw, "GET / HTTP/1.1\r\nHost: gw.test\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(head), br)), nil)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want == 200 && body != "hello world" {
				t.Fatalf("body %q, want the chunks decoded", body)
			}
			if tc.want == 502 && body != "upstream failed to answer\n" {
				t.Fatalf("502 body %q", body)
			}
			if tc.keepOpen {
				select {
				case <-upClosed:
				case <-time.After(10 * time.Second):
					t.Fatal("the gateway kept the upstream conn open after an HTTP/1.0 answer with Transfer-Encoding")
				}
			}
		})
	}
}

// A streamed response's head reaches the client as soon as the upstream
// sent it, before any body byte: an EventSource is open from then on, not
// when the first event comes.
func TestHTTPStreamedHeadNotHeld(t *testing.T) {
	for _, tc := range []struct{ name, head, rest string }{
		{"event stream", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n", "9\r\ndata: 1\n\n\r\n0\r\n\r\n"},
		{"until close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", "data: 1\n\n"},
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "data: 1\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			headSeen := make(chan struct{})
			up := hostileUpstream(t, func(c net.Conn, _ *bufio.Reader, _ string) bool {
				io.WriteString(c, tc.head)
				// The body comes once the client has the head, or after a
				// backstop, so a gateway that holds the head fails below.
				select {
				case <-headSeen:
				case <-time.After(20 * time.Second):
				case <-t.Context().Done():
				}
				io.WriteString(c, tc.rest)
				return false
			})
			gw := gatewayFor(t, up)
			c, err := net.Dial("tcp", gw)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "GET /events HTTP/1.1\r\nHost: gw.test\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			head, err := readHead(br)
			if err != nil {
				t.Fatalf("no response head before the first body byte: %v", err)
			}
			close(headSeen)
			if !strings.HasPrefix(head, "HTTP/1.1 200 ") {
				t.Fatalf("head %q", head)
			}
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(head), br)), nil)
			if err != nil {
				t.Fatal(err)
			}
			if body := readAll(t, resp); body != "data: 1\n\n" {
				t.Fatalf("body %q", body)
			}
		})
	}
}

// An upload with Content-Length reaches the upstream as soon as its
// first bytes came, not once several KiB did: a slow uploader's request
// is seen (and may be refused) at once. On a TLS listener too, where the
// client's bytes come through crypto/tls.
func TestHTTPUploadHeadNotHeld(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	for _, tc := range []struct {
		name string
		tls  *config.TLS
	}{
		{"plain", nil},
		{"tls", &config.TLS{Certificates: []config.Certificate{ca.server(t, "gw", 1, "gw.test")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			heads := make(chan string, 1)
			up := hostileUpstream(t, func(c net.Conn, br *bufio.Reader, head string) bool {
				heads <- head
				var n int64
				fmt.Sscan(headerValues(head, "Content-Length")[0], &n)
				if _, err := io.CopyN(io.Discard, br, n); err != nil {
					return false
				}
				io.WriteString(c, ownAnswer("upload"))
				return true
			})
			var c net.Conn
			var err error
			if tc.tls == nil {
				c, err = net.Dial("tcp", gatewayFor(t, up))
			} else {
				g := startTLSGateway(t, up, tc.tls, nil)
				c, err = tls.Dial("tcp", g.Addrs()[0].String(), &tls.Config{RootCAs: ca.Pool, ServerName: "gw.test"})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(15 * time.Second))
			const size = 100000
			io.WriteString(c, fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: %d\r\n\r\nfirst", size))
			select {
			case head := <-heads:
				if !strings.HasPrefix(head, "POST /upload HTTP/1.1\r\n") {
					t.Fatalf("upstream got %q", head)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream got no request head while the client sent its first body bytes")
			}
			io.WriteString(c, strings.Repeat("u", size-len("first")))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			if body := readAll(t, resp); resp.StatusCode != 200 || body != "for upload" {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
		})
	}
}

// A drain waits for a stream to an HTTP/1.0 client as for any response in
// flight, though the gateway writes that one on a conn fasthttp no longer
// serves.
func TestDrainWaitsForHTTP10Stream(t *testing.T) {
	next := make(chan struct{})
	up := hostileUpstream(t, func(c net.Conn, _ *bufio.Reader, _ string) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
		for _, chunk := range []string{"9\r\ndata: 2\n\n\r\n", "0\r\n\r\n"} {
			select {
			case <-next:
			case <-t.Context().Done():
				return false
			}
			io.WriteString(c, chunk)
		}
		return false
	})
	g := startGateway(t, configFor(up))
	addr := g.Addrs()[0].String()
	head, _, br := rawExchange(t, addr, "GET /events HTTP/1.0\r\nHost: gw.test\r\n\r\n")
	if te := headerValues(head, "Transfer-Encoding"); len(te) > 0 {
		t.Fatalf("an HTTP/1.0 client got Transfer-Encoding %q", te)
	}
	event := make([]byte, len("data: 1\n\n"))
	if _, err := io.ReadFull(br, event); err != nil || string(event) != "data: 1\n\n" {
		t.Fatalf("first event %q, %v", event, err)
	}

	done := make(chan error, 1)
	go func() { done <- g.Shutdown(context.Background()) }()
	waitListenerClosed(t, addr)
	// The stream still flows while the gateway drains.
	next <- struct{}{}
	if _, err := io.ReadFull(br, event); err != nil || string(event) != "data: 2\n\n" {
		t.Fatalf("event while draining %q, %v", event, err)
	}
	// fasthttp's part of Shutdown sees no conn of its own left within its
	// 100 ms poll; a drain that forgot the stream returns soon after. The
	// window only gives that mistake time to show.
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a response was streaming", err)
	case <-time.After(500 * time.Millisecond):
	}
	next <- struct{}{}
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Fatalf("after the last event: %q, %v", rest, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the stream ended")
	}
}

// FuzzTransferEncodingOf: whatever the head, the reader of an HTTP/1.0
// answer's Transfer-Encoding neither panics nor calls chunked a head
// without a Transfer-Encoding line that says so, and reads nothing past
// the blank line.
func FuzzTransferEncodingOf(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello",
		"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, head string) {
		done, chunked, err := transferEncodingOf([]byte(head))
		if chunked && (!done || err != nil) {
			t.Fatalf("chunked with done %v, err %v", done, err)
		}
		end := strings.Index(head, "\n\r\n")
		if alt := strings.Index(head, "\n\n"); alt >= 0 && (end < 0 || alt < end) {
			end = alt
		}
		if chunked && !strings.Contains(strings.ToLower(head[:max(end, 0)]), "chunked") {
			t.Fatalf("chunked for a head without the word: %q", head)
		}
	})
}
