package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/internal/syncbuf"
)

func TestAcceptKey(t *testing.T) {
	for key, want := range map[string]string{
		"dGhlIHNhbXBsZSBub25jZQ==": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", // RFC 6455 section 1.3
		"sN9cRrP/n9NdMgdcy2VJFQ==": "fFBooB7FAkLlXgRSz0BT3v4hq5s=", // the seed's example
	} {
		if got := AcceptKey(key); got != want {
			t.Errorf("AcceptKey(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestEchoSizes(t *testing.T) {
	gw := gatewayFor(t, echoUpstream(t, websocket.Upgrader{}))
	c := dial(t, gw, "/echo", nil)
	c.SetReadLimit(64 << 20)
	for _, size := range []int{0, 125, 126, 65535, 65536, 16 << 20} {
		for _, mt := range []int{websocket.TextMessage, websocket.BinaryMessage} {
			msg := make([]byte, size)
			for i := range msg {
				msg[i] = 'a' + byte(rand.IntN(26))
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				t.Fatalf("write %d bytes: %v", size, err)
			}
			gotType, got, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("read %d bytes: %v", size, err)
			}
			if gotType != mt || !bytes.Equal(got, msg) {
				t.Fatalf("size %d type %d: got type %d, %d bytes, equal=%v", size, mt, gotType, len(got), bytes.Equal(got, msg))
			}
		}
	}
}

// Fragments of one message with pings between them must reach the upstream
// as sent: the echo server reassembles "Hello world" and answers each ping.
func TestFragmentsWithInterleavedPings(t *testing.T) {
	gw := gatewayFor(t, echoUpstream(t, websocket.Upgrader{}))
	var out []byte
	out = append(out, frame(opText, false, true, []byte("Hel"))...)
	out = append(out, frame(opPing, true, true, []byte("p1"))...)
	out = append(out, frame(opContinuation, false, true, []byte("lo "))...)
	out = append(out, frame(opPing, true, true, []byte("p2"))...)
	out = append(out, frame(opContinuation, true, true, []byte("world"))...)
	c, br, resp := rawClient(t, gw, nil)
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 3 {
		f, err := readFrame(br)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, fmt.Sprintf("%x:%s", f.op, f.payload))
	}
	want := []string{"a:p1", "a:p2", "1:Hello world"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("frames %v, want %v", got, want)
	}
}

func TestPingPong(t *testing.T) {
	gw := gatewayFor(t, echoUpstream(t, websocket.Upgrader{}))
	c := dial(t, gw, "/", nil)
	pong := make(chan string, 1)
	c.SetPongHandler(func(data string) error { pong <- data; return nil })
	if err := c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	go c.ReadMessage() // control frames are handled while reading
	select {
	case p := <-pong:
		if p != "are you there" {
			t.Fatalf("pong %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
}

func TestCloseCodesBothWays(t *testing.T) {
	t.Run("client closes", func(t *testing.T) {
		gw := gatewayFor(t, echoUpstream(t, websocket.Upgrader{}))
		c := dial(t, gw, "/", nil)
		msg := websocket.FormatCloseMessage(4001, "client bye")
		if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		_, _, err := c.ReadMessage()
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != 4001 || ce.Text != "client bye" {
			t.Fatalf("echoed close: %v", err)
		}
	})
	t.Run("upstream closes", func(t *testing.T) {
		up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u := websocket.Upgrader{}
			c, err := u.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4002, "server bye"), time.Now().Add(time.Second))
			c.ReadMessage() // wait for the client's answer
		}))
		c := dial(t, gatewayFor(t, up), "/", nil)
		_, _, err := c.ReadMessage()
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != 4002 || ce.Text != "server bye" {
			t.Fatalf("close from upstream: %v", err)
		}
	})
}

// The classic lost-bytes bug: a frame in the same TCP write as the
// handshake sits in the server's read buffer when the connection is
// hijacked.
func TestClientFrameInHandshakeWrite(t *testing.T) {
	gw := gatewayFor(t, echoUpstream(t, websocket.Upgrader{}))
	_, br, resp := rawClient(t, gw, frame(opText, true, true, []byte("first words")))
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	f, err := readFrame(br)
	if err != nil || f.op != opText || string(f.payload) != "first words" {
		t.Fatalf("echo of the early frame: %+v, %v", f, err)
	}
}

// The same bug on the other side: an upstream (Engine.IO does this) that
// sends its first frame in the same write as its 101.
func TestUpstreamFrameIn101Write(t *testing.T) {
	up := rawUpstream(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
		c.Write(append([]byte(switchingProtocols(req)), frame(opText, true, false, []byte(`0{"sid":"x"}`))...))
		readFrame(br) // hold the conn until the client talks or leaves
	})
	c := dial(t, gatewayFor(t, up), "/", nil)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil || string(msg) != `0{"sid":"x"}` {
		t.Fatalf("first frame: %q, %v", msg, err)
	}
}

func TestSubprotocolAndDeflateEndToEnd(t *testing.T) {
	up := echoUpstream(t, websocket.Upgrader{Subprotocols: []string{"chat.v2"}, EnableCompression: true})
	var log syncbuf.Buffer
	g := startGatewayLogging(t, configFor(up), &log)
	d := websocket.Dialer{Subprotocols: []string{"chat.v1", "chat.v2"}, EnableCompression: true}
	c, resp, err := d.Dial("ws://"+g.Addrs()[0].String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Subprotocol() != "chat.v2" {
		t.Fatalf("subprotocol %q", c.Subprotocol())
	}
	mustContain(t, resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate")
	msg := bytes.Repeat([]byte("compress me "), 10000) // 120,000 bytes
	if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
		t.Fatal(err)
	}
	_, got, err := c.ReadMessage()
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	// The gateway moved the compressed frames: far fewer bytes than the
	// message, in both directions (its access log counts them).
	c.Close()
	waitFor(t, "tunnel logged", func() bool { return strings.Contains(log.String(), "status=101") })
	var up1, down1 int
	fmt.Sscanf(log.String()[strings.Index(log.String(), " up="):], " up=%d down=%d", &up1, &down1)
	if up1 == 0 || up1 > 10000 || down1 == 0 || down1 > 10000 {
		t.Fatalf("tunnel carried %d bytes up, %d down for a %d-byte message each way: not compressed end to end", up1, down1, len(msg))
	}
}

// Plain TCP tunnels must reach the event-loop relay: the hijacked conn has
// to be unwrapped down to the *net.TCPConn (the relay could not take
// fasthttp's and the gateway's wrappers).
func TestPlainTunnelsGoToTheRelay(t *testing.T) {
	g := startGateway(t, configFor(echoUpstream(t, websocket.Upgrader{})))
	dial(t, g.Addrs()[0].String(), "/", nil)
	waitFor(t, "tunnel registered", func() bool { return g.ActiveTunnels() == 1 })
	g.mu.Lock()
	defer g.mu.Unlock()
	for tn := range g.tunnels.All {
		if _, ok := tn.(*relayedTunnel); !ok {
			t.Errorf("tunnel is a %T, want *relayedTunnel", tn)
		}
	}
}

// handshakeRecorder is a raw WebSocket backend that sends every handshake
// head it receives, as bytes, to heads, answers it with a correct 101
// carrying the extra header lines (each ending in CRLF), and then holds
// the conn until the gateway closes it.
func handshakeRecorder(t *testing.T, extra string) (addr string, heads <-chan string) {
	t.Helper()
	ch := make(chan string, 64)
	addr = hostileUpstream(t, func(c net.Conn, br *bufio.Reader, head string) bool {
		ch <- head
		key := ""
		if keys := headerValues(head, "Sec-WebSocket-Key"); len(keys) > 0 {
			key = keys[0]
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: "+AcceptKey(key)+"\r\n"+extra+"\r\n")
		io.Copy(io.Discard, br)
		return false
	})
	return addr, ch
}

// sendHandshake sends request to the gateway at addr on a conn of its own
// and returns the answer's head and, unless it is a 101, its body.
func sendHandshake(t *testing.T, addr, request string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(rawReadLimit))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", request, err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, ""
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body of a %d: %v", resp.StatusCode, err)
	}
	return resp, string(body)
}

// A Connection header may list hop-by-hop headers for the gateway to
// drop, but not the ones the handshake means something by: the backend
// still gets Host, Origin, Cookie and every Sec-WebSocket-* header.
func TestConnectionCannotStripEndToEndHeaders(t *testing.T) {
	kept := []string{
		"Host: app.test",
		"Origin: https://app.test",
		"Cookie: session=1",
		"Sec-WebSocket-Key: " + testKey,
		"Sec-WebSocket-Version: 13",
		"Sec-WebSocket-Protocol: chat",
	}
	for _, connection := range []string{
		"Upgrade, Host",
		"Upgrade, Origin, Cookie",
		"Upgrade, Sec-WebSocket-Key",
		"upgrade, sec-websocket-version, Sec-WebSocket-Protocol, X-Hop",
	} {
		t.Run(connection, func(t *testing.T) {
			up, heads := handshakeRecorder(t, "")
			gw := gatewayFor(t, up)
			req := "GET / HTTP/1.1\r\nConnection: " + connection + "\r\nUpgrade: websocket\r\n" +
				strings.Join(kept, "\r\n") + "\r\nX-Hop: 1\r\n\r\n"
			resp, body := sendHandshake(t, gw, req)
			if resp.StatusCode != 101 {
				t.Fatalf("status %d %q, want 101", resp.StatusCode, body)
			}
			head := recvHead(t, heads)
			lines := headLines(head)
			for _, want := range kept {
				if !slices.Contains(lines, want) {
					t.Errorf("%q did not reach the backend:\n%s", want, head)
				}
			}
			if strings.Contains(connection, "X-Hop") && len(headerValues(head, "X-Hop")) > 0 {
				t.Errorf("X-Hop, listed in Connection, reached the backend:\n%s", head)
			}
		})
	}
}

// An absolute-form handshake is routed by its target's authority (RFC
// 9112 section 3.2.2), so the backend gets that authority as Host and the
// target in origin form, as any backend expects from a gateway.
func TestAbsoluteFormHandshake(t *testing.T) {
	up, heads := handshakeRecorder(t, "")
	cfg := configFor(up)
	cfg.Routes[0].Host = "other.host" // a Host: x route would be a 404
	gw := startGateway(t, cfg).Addrs()[0].String()
	resp, body := sendHandshake(t, gw, "GET http://Other.Host/chat?room=1 HTTP/1.1\r\nHost: x\r\n"+
		"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+testKey+"\r\n\r\n")
	if resp.StatusCode != 101 {
		t.Fatalf("status %d %q, want 101", resp.StatusCode, body)
	}
	head := recvHead(t, heads)
	if line, _, _ := strings.Cut(head, "\r\n"); line != "GET /chat?room=1 HTTP/1.1" {
		t.Errorf("request line %q, want origin form", line)
	}
	if hosts := headerValues(head, "Host"); !slices.Equal(hosts, []string{"other.host"}) {
		t.Errorf("Host %q, want the one the route was chosen by:\n%s", hosts, head)
	}
	if fh := headerValues(head, "X-Forwarded-Host"); !slices.Equal(fh, []string{"other.host"}) {
		t.Errorf("X-Forwarded-Host %q:\n%s", fh, head)
	}
}

// A handshake is a GET without a body (RFC 6455 section 4.1): one that
// announces a body is refused with 400 before any upstream is contacted,
// or the body would reach the backend as the client's first frames.
// Content-Length: 0 announces none.
func TestHandshakeWithBody(t *testing.T) {
	const handshake = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\n"
	for _, tc := range []struct {
		name, framing, body string
		want                int
	}{
		{"content-length", "Content-Length: 5\r\n", "\x81\x03abc", 400},
		{"chunked", "Transfer-Encoding: chunked\r\n", "5\r\n\x81\x03abc\r\n0\r\n\r\n", 400},
		{"identity", "Transfer-Encoding: identity\r\n", "", 400},
		{"content-length 0", "Content-Length: 0\r\n", "", 101},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, heads := handshakeRecorder(t, "")
			gw := gatewayFor(t, up)
			resp, body := sendHandshake(t, gw, handshake+tc.framing+"\r\n"+tc.body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want == 101 {
				recvHead(t, heads)
				return
			}
			if !strings.Contains(body, "must not carry a body") || strings.Count(body, "\n") != 1 {
				t.Errorf("reason %q, want one line saying a handshake has no body", body)
			}
			// Had the gateway forwarded the handshake, the backend would
			// have had its head before the gateway could answer.
			select {
			case head := <-heads:
				t.Fatalf("the backend was sent a handshake with a body:\n%s", head)
			default:
			}
		})
	}
}

// The head of a 101 may be at most 64 KiB (docs/proxying.md, step 7), as
// maxResponseHead says.
func TestUpstream101HeadLimit(t *testing.T) {
	for _, tc := range []struct {
		size   int
		status int
	}{
		{maxResponseHead, 101},
		{maxResponseHead + 1, 502},
	} {
		t.Run(strconv.Itoa(tc.size), func(t *testing.T) {
			up := rawUpstream(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
				head := strings.TrimSuffix(switchingProtocols(req), "\r\n")
				pad := tc.size - len(head) - len("X-Pad: \r\n\r\n")
				io.WriteString(c, head+"X-Pad: "+strings.Repeat("p", pad)+"\r\n\r\n")
				br.ReadByte() // hold the conn until the gateway closes it
			})
			resp, body := sendHandshake(t, gatewayFor(t, up), handshakeRequest("x", "/"))
			if resp.StatusCode != tc.status {
				t.Fatalf("%d-byte head: status %d %q, want %d", tc.size, resp.StatusCode, body, tc.status)
			}
		})
	}
}

// FuzzResponseHead: a 101 the gateway takes for a good answer to a
// handshake, and relays byte for byte, reads the same to a client that is
// not the gateway (net/http's reader, as fasthttp/websocket's Dialer uses):
// a 101 in HTTP/1.1 with Upgrade: websocket, Connection: upgrade and one
// Sec-WebSocket-Accept, the right one.
func FuzzResponseHead(f *testing.F) {
	accept := AcceptKey(testKey)
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 101\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\nsec-websocket-accept:" + accept + "\r\nX-A: a\r\n\r\n\x81\x01a"))
	f.Add([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"))
	for _, b := range broken101s {
		f.Add([]byte(b.answer(accept)))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		end := bytes.Index(raw, []byte("\r\n\r\n"))
		if end < 0 {
			return
		}
		head := raw[:end+4]
		r, err := parseResponseHead(raw, len(head))
		if err != nil || r.status != 101 || r.problem101(testKey) != "" {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
		if err != nil {
			t.Fatalf("a 101 relayed as good is unreadable to net/http: %v\n%q", err, head)
		}
		if resp.StatusCode != 101 || resp.ProtoMajor != 1 || resp.ProtoMinor != 1 ||
			!slices.Equal(resp.Header.Values("Sec-WebSocket-Accept"), []string{accept}) ||
			!strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
			!hasToken([]byte(strings.Join(resp.Header.Values("Connection"), ",")), "upgrade") {
			t.Fatalf("relayed as a good 101, read by net/http as %d HTTP/%d.%d %q:\n%q",
				resp.StatusCode, resp.ProtoMajor, resp.ProtoMinor, resp.Header, head)
		}
	})
}
