package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/config"
)

// deadAddress returns a loopback address nothing listens on.
func deadAddress(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// dialStatus tries a WebSocket handshake and returns the HTTP status and
// body of a refusal (or 101).
func dialStatus(t testing.TB, addr string) (int, string) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
	if err == nil {
		c.Close()
		return 101, ""
	}
	if resp == nil {
		t.Fatalf("dial: %v (no response)", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestUpstreamRefusalRelayed(t *testing.T) {
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Reason", "token")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "forbidden: no token")
	}))
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+gatewayFor(t, up)+"/", nil)
	if err == nil {
		c.Close()
		t.Fatal("handshake succeeded")
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 403 || string(body) != "forbidden: no token" || resp.Header.Get("X-Reason") != "token" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

func TestUpstreamHandshakeFailures(t *testing.T) {
	cases := []struct {
		name   string
		serve  func(c net.Conn, br *bufio.Reader, req *http.Request)
		status int
	}{
		{"wrong accept", func(c net.Conn, _ *bufio.Reader, _ *http.Request) {
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n")
			time.Sleep(time.Second)
		}, 502},
		{"closes mid-handshake", func(c net.Conn, _ *bufio.Reader, _ *http.Request) {
			io.WriteString(c, "HTTP/1.1 101 Swi")
		}, 502},
		{"garbage answer", func(c net.Conn, _ *bufio.Reader, _ *http.Request) {
			io.WriteString(c, "SSH-2.0-OpenSSH\r\n\r\n")
		}, 502},
		{"four-digit status", func(c net.Conn, br *bufio.Reader, req *http.Request) {
			io.WriteString(c, strings.Replace(switchingProtocols(req), " 101 ", " 1011 ", 1))
			br.ReadByte() // hold the conn until the gateway closes it
		}, 502},
		{"never answers", func(c net.Conn, br *bufio.Reader, _ *http.Request) {
			br.ReadByte() // blocks until the gateway gives up and closes
		}, 504},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gw := gatewayFor(t, rawUpstream(t, tc.serve))
			status, body := dialStatus(t, gw)
			if status != tc.status {
				t.Fatalf("status %d (%q), want %d", status, body, tc.status)
			}
			if body == "" {
				t.Fatal("refusal without a reason")
			}
		})
	}
}

func TestNoUpstreamReachable(t *testing.T) {
	cfg := configFor(deadAddress(t), deadAddress(t))
	// A long connect timeout: a refusal that waited for it would show.
	cfg.Timeouts.Connect = config.Duration(30 * time.Second)
	gw := startGateway(t, cfg).Addrs()[0].String()
	start := time.Now()
	status, body := dialStatus(t, gw)
	if status != 502 {
		t.Fatalf("status %d %q, want 502", status, body)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("502 took %v: a refused connection waited for the connect timeout", d)
	}
}

func TestOneServerDownEveryHandshakeSucceeds(t *testing.T) {
	gw := gatewayFor(t, deadAddress(t), echoUpstream(t, websocket.Upgrader{}))
	for i := range 50 {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+gw+"/", nil)
		if err != nil {
			t.Fatalf("handshake %d: %v", i, err)
		}
		c.Close()
	}
}

func TestMalformedHandshakes(t *testing.T) {
	gw := gatewayFor(t, echoUpstream(t, websocket.Upgrader{}))
	const base = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	cases := []struct {
		name, request, status, reason string
	}{
		{"no key", "GET / HTTP/1.1\r\n" + base + "Sec-WebSocket-Version: 13\r\n\r\n", "400", "Sec-WebSocket-Key"},
		{"short key", "GET / HTTP/1.1\r\n" + base + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n\r\n", "400", "16 bytes"},
		{"key of 17 bytes", "GET / HTTP/1.1\r\n" + base + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n", "400", "16 bytes"},
		{"key of 16 bytes and more", "GET / HTTP/1.1\r\n" + base + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==AAAA\r\n\r\n", "400", "16 bytes"},
		{"version 8", "GET / HTTP/1.1\r\n" + base + "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: " + testKey + "\r\n\r\n", "426", "version"},
		{"POST", "POST / HTTP/1.1\r\n" + base + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\nContent-Length: 0\r\n\r\n", "400", "GET"},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n" + base + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\n\r\n", "400", "HTTP/1.1"},
		{"not HTTP", "\x16\x03\x01garbage\r\n\r\n", "400", "malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := rawRequest(t, gw, tc.request)
			status, _, _ := strings.Cut(strings.TrimPrefix(out, "HTTP/1.1 "), " ")
			if status != tc.status {
				t.Fatalf("response %q, want status %s", out, tc.status)
			}
			mustContain(t, out, tc.reason)
			if tc.status == "426" {
				mustContain(t, out, "Sec-WebSocket-Version: 13")
			}
		})
	}
	// Header names are case-insensitive (RFC 9110 section 5.1).
	lower := "GET / HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n" +
		"sec-websocket-version: 13\r\nsec-websocket-key: " + testKey + "\r\n\r\n"
	c0, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	defer c0.Close()
	io.WriteString(c0, lower)
	resp, err := http.ReadResponse(bufio.NewReader(c0), nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("lower-case handshake: %v, %v", resp, err)
	}

	// The gateway still serves well-formed clients.
	c := dial(t, gw, "/", nil)
	if err := c.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "still here" {
		t.Fatalf("echo after bad clients: %q, %v", msg, err)
	}
}

// A client that shuts its write side still receives what the upstream
// sends afterwards: the FIN reaches the upstream as a FIN, not a close.
func TestHalfClose(t *testing.T) {
	up := rawUpstream(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
		io.WriteString(c, switchingProtocols(req))
		if _, err := br.ReadByte(); err != io.EOF {
			io.WriteString(c, "expected EOF") // corrupts the stream: the test fails
			return
		}
		c.Write(frame(opText, true, false, []byte("after your FIN")))
	})
	c, br, resp := rawClient(t, gatewayFor(t, up), nil)
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	f, err := readFrame(br)
	if err != nil || string(f.payload) != "after your FIN" {
		t.Fatalf("frame after half-close: %+v, %v", f, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after upstream closed: %v, want EOF", err)
	}
}

// Handshakes a backend could read otherwise than the gateway checked
// them are refused at the edge, and never reach the backend.
func TestAmbiguousHandshakesRefused(t *testing.T) {
	up, heads := handshakeRecorder(t, "")
	gw := gatewayFor(t, up)
	const headers = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	const start = "GET / HTTP/1.1\r\n" + headers
	const version, key = "Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Key: " + testKey + "\r\n"
	for _, tc := range []struct{ name, request, reason string }{
		// Joined to X-A by the gateway, a header of its own for many
		// backends, ahead of the gateway's X-Forwarded-For.
		{"obs-fold", start + version + key + "X-A: a\r\n X-Forwarded-For: 6.6.6.6\r\n\r\n", "obs-fold"},
		{"obs-fold with a tab", start + version + key + "X-A: a\r\n\tb\r\n\r\n", "obs-fold"},
		{"space in a name", start + version + key + "X Forwarded-For: 6.6.6.6\r\n\r\n", `"X Forwarded-For"`},
		{"Transfer Encoding", start + version + key + "Transfer Encoding: chunked\r\n\r\n", `"Transfer Encoding"`},
		{"two keys", start + version + key + "sec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n", "more than one Sec-WebSocket-Key"},
		{"one key twice", start + version + key + key + "\r\n", "more than one Sec-WebSocket-Key"},
		{"two versions", start + version + key + "Sec-WebSocket-Version: 8\r\n\r\n", "more than one Sec-WebSocket-Version"},
		{"asterisk form", "GET * HTTP/1.1\r\n" + headers + version + key + "\r\n", "target"},
		{"absolute form without a host", "GET http://u@/ HTTP/1.1\r\n" + headers + version + key + "\r\n", "target"},
		// fasthttp reads the path's start as an authority, "a:".
		{"path read as a URI", "GET //a://b/c HTTP/1.1\r\n" + headers + version + key + "\r\n", "target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := sendHandshake(t, gw, tc.request)
			if resp.StatusCode != 400 {
				t.Fatalf("status %d %q, want 400", resp.StatusCode, body)
			}
			mustContain(t, body, tc.reason)
			if strings.Count(body, "\n") != 1 {
				t.Errorf("reason %q is not one line", body)
			}
			// A forwarded head would be on heads before any answer came.
			select {
			case head := <-heads:
				t.Fatalf("the handshake reached the backend:\n%s", head)
			default:
			}
		})
	}
	// The backend is reachable: the refusals were the gateway's.
	if resp, body := sendHandshake(t, gw, start+version+key+"\r\n"); resp.StatusCode != 101 {
		t.Fatalf("a good handshake after them: status %d %q", resp.StatusCode, body)
	}
}

// broken101s are answers to a handshake that no client may take (RFC 6455
// section 4.1), each with the Sec-WebSocket-Accept that key calls for.
var broken101s = []struct {
	name   string
	answer func(accept string) string
}{
	{"two accepts, the first wrong", func(accept string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n"
	}},
	{"HTTP/1.0", func(accept string) string {
		return "HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n"
	}},
	{"no Upgrade", func(accept string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n"
	}},
	{"Upgrade: h2c", func(accept string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n"
	}},
	{"no Connection: Upgrade", func(accept string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n"
	}},
	{"obs-fold", func(accept string) string {
		return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n Set-Cookie: a=1\r\n\r\n"
	}},
}

// A broken 101 is a failed try: the client never sees it, and the next
// server is tried, as for a wrong Sec-WebSocket-Accept.
func TestBroken101RetriedOnAnotherServer(t *testing.T) {
	for _, tc := range broken101s {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int32
			broken := rawUpstream(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
				hits.Add(1)
				io.WriteString(c, tc.answer(AcceptKey(req.Header.Get("Sec-WebSocket-Key"))))
				br.ReadByte() // hold the conn until the gateway closes it
			})
			good, _ := handshakeRecorder(t, "X-Server: good\r\n")
			gw := gatewayFor(t, broken, good)
			for i := 0; hits.Load() == 0; i++ {
				if i == 10 {
					t.Fatal("10 handshakes, none tried the broken server")
				}
				resp, body := sendHandshake(t, gw, handshakeRequest("x", "/"))
				if resp.StatusCode != 101 || resp.Header.Get("X-Server") != "good" {
					t.Fatalf("handshake %d: status %d %q, X-Server %q: want the good server's 101",
						i, resp.StatusCode, body, resp.Header.Get("X-Server"))
				}
			}
			// Alone, the broken server gives a 502 with a reason.
			resp, body := sendHandshake(t, gatewayFor(t, broken), handshakeRequest("x", "/"))
			if resp.StatusCode != 502 || body == "" {
				t.Fatalf("alone: status %d %q, want 502 with a reason", resp.StatusCode, body)
			}
		})
	}
}
