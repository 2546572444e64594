package proxy

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/config"
)

func TestHasToken(t *testing.T) {
	for _, c := range []struct {
		v, token string
		want     bool
	}{
		{"keep-alive, Upgrade", "upgrade", true},
		{"Upgrade", "upgrade", true},
		{"UPGRADE", "upgrade", true},
		{" \tupgrade\t ", "upgrade", true},
		{"keep-alive,upgrade", "upgrade", true},
		{"upgradex", "upgrade", false},
		{"xupgrade", "upgrade", false},
		{"keep-alive, up grade", "upgrade", false},
		{"keep-alive", "upgrade", false},
		{"", "upgrade", false},
		{",,", "upgrade", false},
		{"websocket/13, h2c", "websocket", false},
		{"h2c, WebSocket", "websocket", true},
	} {
		if got := hasToken([]byte(c.v), c.token); got != c.want {
			t.Errorf("hasToken(%q, %q) = %v, want %v", c.v, c.token, got, c.want)
		}
	}
}

// parseRequestHead parses raw the way the gateway's server does: header
// names are left as the client spelled them.
func parseRequestHead(t *testing.T, raw string) *fasthttp.RequestHeader {
	t.Helper()
	var h fasthttp.RequestHeader
	h.DisableNormalizing()
	if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatalf("parse head: %v", err)
	}
	return &h
}

// forwardedFor builds what newForwarded gives for h received on a plain
// connection from 127.0.0.1.
func forwardedFor(h *fasthttp.RequestHeader) forwarded {
	var req fasthttp.Request
	h.CopyTo(&req.Header)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	return newForwarded(&ctx, &listenerInfo{clientCertHeader: []byte(config.DefaultClientCertHeader)},
		newCertHeaderNames(config.DefaultClientCertHeader))
}

func TestAppendUpgradeRequestHead(t *testing.T) {
	h := parseRequestHead(t, "GET /chat?room=1 HTTP/1.1\r\n"+
		"Host: ws.example:8080\r\n"+
		"x-lower-case: a\r\n"+
		"Connection: keep-alive, Upgrade, X-Hop\r\n"+
		"Upgrade: websocket\r\n"+
		"Keep-Alive: 300\r\n"+
		"X-Hop: secret\r\n"+
		"TE: trailers\r\n"+
		"Proxy-Connection: keep-alive\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"+
		"Sec-WebSocket-Version: 13\r\n"+
		"X-Forwarded-For: 10.0.0.1\r\n"+
		"X-Real-IP: 6.6.6.6\r\n"+
		"X-Forwarded-Proto: https\r\n"+
		"Sec-WebSocket-Protocol: chat, superchat\r\n"+
		"Connection: Upgrade\r\n"+
		"\r\n")
	got := string(appendUpgradeRequestHead(nil, h, forwardedFor(h)))
	// Original order and spelling; one Connection line where the first was;
	// client-sent X-Real-IP and X-Forwarded-Proto replaced, not kept.
	want := "GET /chat?room=1 HTTP/1.1\r\n" +
		"Host: ws.example:8080\r\n" +
		"x-lower-case: a\r\n" +
		"Connection: Upgrade\r\n" +
		"Upgrade: websocket\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Sec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: chat, superchat\r\n" +
		"X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n" +
		"X-Forwarded-Proto: http\r\n" +
		"X-Forwarded-Host: ws.example:8080\r\n" +
		"X-Real-IP: 127.0.0.1\r\n" +
		"\r\n"
	if got != want {
		t.Errorf("head:\n%s\nwant:\n%s", got, want)
	}
}

func TestAppendUpgradeRequestHeadWithoutPriorXFF(t *testing.T) {
	h := parseRequestHead(t, "GET / HTTP/1.1\r\n"+
		"host: a.test\r\n"+
		"upgrade: websocket\r\n"+
		"connection: upgrade\r\n"+
		"\r\n")
	got := string(appendUpgradeRequestHead(nil, h, forwardedFor(h)))
	want := "GET / HTTP/1.1\r\n" +
		"host: a.test\r\n" +
		"upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"X-Forwarded-For: 127.0.0.1\r\n" +
		"X-Forwarded-Proto: http\r\n" +
		"X-Forwarded-Host: a.test\r\n" +
		"X-Real-IP: 127.0.0.1\r\n" +
		"\r\n"
	if got != want {
		t.Errorf("head:\n%s\nwant:\n%s", got, want)
	}
}

// TestNewForwardedXFFAnyCase: a prior X-Forwarded-For is found whatever
// its spelling (the server keeps names as sent, and fasthttp's Peek then
// matches byte for byte), and repeated ones are joined in order.
func TestNewForwardedXFFAnyCase(t *testing.T) {
	h := parseRequestHead(t, "GET / HTTP/1.1\r\n"+
		"Host: a.test\r\n"+
		"x-forwarded-for: 10.0.0.1\r\n"+
		"X-FORWARDED-FOR: 10.0.0.2, 10.0.0.3\r\n"+
		"\r\n")
	f := forwardedFor(h)
	if got, want := f.xff(), "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"; got != want {
		t.Errorf("xff = %q, want %q", got, want)
	}
	if f.host != "a.test" || f.proto != "http" || f.clientIP != "127.0.0.1" {
		t.Errorf("forwarded = %+v", f)
	}
}

func TestAppendHTTPRequestHeadAnyCase(t *testing.T) {
	h := parseRequestHead(t, "GET /x HTTP/1.1\r\n"+
		"Host: a.test\r\n"+
		"connection: x-hop, Keep-Alive, Host\r\n"+
		"keep-alive: 300\r\n"+
		"te: trailers\r\n"+
		"proxy-connection: keep-alive\r\n"+
		"X-HOP: 1\r\n"+
		"x-real-ip: 6.6.6.6\r\n"+
		"x-forwarded-proto: https\r\n"+
		"X-Custom-CASE: v\r\n"+
		"\r\n")
	got, clientClose := appendHTTPRequestHead(nil, h, forwardedFor(h), "10.0.0.1:80")
	want := "GET /x HTTP/1.1\r\n" +
		"Host: a.test\r\n" +
		"X-Custom-CASE: v\r\n" +
		"TE: trailers\r\n" + // the gateway's own: it relays trailers
		"X-Forwarded-For: 127.0.0.1\r\n" +
		"X-Forwarded-Proto: http\r\n" +
		"X-Forwarded-Host: a.test\r\n" +
		"X-Real-IP: 127.0.0.1\r\n" +
		"\r\n"
	if string(got) != want || clientClose {
		t.Errorf("upstream head (close %v):\n%s\nwant:\n%s", clientClose, got, want)
	}
}

// The head goes upstream as the client wrote it: cookies byte for byte
// (quotes, JSON values, nameless ones, several lines in their places),
// Host as spelled, the target as sent ("/?"), no Content-Type or
// Content-Length the client did not send; an absolute-form target loses
// its scheme, host and userinfo and the client's Authorization stays.
func TestAppendHTTPRequestHeadAsSent(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"cookies", "GET /?a HTTP/1.1\r\nHost: A.Test\r\nCookie: sig=\"abc==\"; j={\"a\":1}\r\nX-Mid: 1\r\nCookie: =nameless\r\n\r\n",
			"GET /?a HTTP/1.1\r\nHost: A.Test\r\nCookie: sig=\"abc==\"; j={\"a\":1}\r\nX-Mid: 1\r\nCookie: =nameless\r\n"},
		{"empty query", "GET /? HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET /? HTTP/1.1\r\nHost: a.test\r\n"},
		{"DELETE without a body", "DELETE /r HTTP/1.1\r\nHost: a.test\r\n\r\n", "DELETE /r HTTP/1.1\r\nHost: a.test\r\n"},
		{"POST without Content-Type", "POST /r HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\n",
			"POST /r HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n"},
		{"chunked", "POST /r HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
			"POST /r HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n"},
		{"absolute form with userinfo", "GET http://u:p@other.test/p?q HTTP/1.1\r\nHost: a.test\r\nAuthorization: Bearer t\r\n\r\n",
			"GET /p?q HTTP/1.1\r\nHost: other.test\r\nAuthorization: Bearer t\r\n"},
		{"absolute form, no path", "GET http://a.test?q HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET /?q HTTP/1.1\r\nHost: a.test\r\n"},
		{"HTTP/1.0 without Host", "GET /p HTTP/1.0\r\nX-A: 1\r\n\r\n", "GET /p HTTP/1.1\r\nX-A: 1\r\nHost: 10.0.0.1:80\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := parseRequestHead(t, tc.in)
			got, _ := appendHTTPRequestHead(nil, h, forwardedFor(h), "10.0.0.1:80")
			if !strings.HasPrefix(string(got), tc.want+"X-Forwarded-For: ") {
				t.Errorf("upstream head:\n%s\nwant it to start:\n%s", got, tc.want)
			}
		})
	}
}

func TestCleanHTTPResponseAnyCase(t *testing.T) {
	var h fasthttp.ResponseHeader
	h.DisableNormalizing()
	raw := "HTTP/1.1 200 OK\r\n" +
		"Content-Length: 0\r\n" +
		"connection: x-foo\r\n" +
		"x-foo: 1\r\n" +
		"keep-alive: timeout=5\r\n" +
		"Proxy-Authenticate: Basic\r\n" +
		"upgrade: h2c\r\n" +
		"Set-Cookie: a=1\r\n" +
		"Set-Cookie: b=2\r\n" +
		"X-Custom: v\r\n" +
		"\r\n"
	if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	cleanHTTPResponse(&h)
	s := h.String()
	for _, gone := range []string{"x-foo", "keep-alive", "Proxy-Authenticate", "upgrade", "connection"} {
		if strings.Contains(strings.ToLower(s), strings.ToLower(gone)+":") {
			t.Errorf("%s relayed:\n%s", gone, s)
		}
	}
	for _, kept := range []string{"Set-Cookie: a=1\r\n", "Set-Cookie: b=2\r\n", "X-Custom: v\r\n"} {
		if !strings.Contains(s, kept) {
			t.Errorf("%q missing:\n%s", kept, s)
		}
	}
}

// routedBy is the host and path the gateway routes a request with head h
// by (ctx.Host() and ctx.Path()).
func routedBy(h *fasthttp.RequestHeader) (host, path string) {
	var req fasthttp.Request
	h.CopyTo(&req.Header)
	return string(req.URI().Host()), string(req.URI().Path())
}

// FuzzUpgradeRequestHead: a handshake checkClientHandshake lets through
// reaches the backend as the gateway read it. Read back by the gateway's
// own parser, the forwarded head routes the same way; read by net/http (a
// Go backend, and a parser that is not fasthttp), it has the key and
// version that were checked, only the gateway's X-Forwarded-For and
// X-Real-IP, and no hop-by-hop header but Connection: Upgrade and Upgrade.
func FuzzUpgradeRequestHead(f *testing.F) {
	const rest = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\n"
	for _, seed := range []string{
		handshakeRequest("a.test", "/chat?room=1"),
		"GET / HTTP/1.1\r\nHost: a\r\n" + rest + "X-A: a\r\n X-Forwarded-For: 6.6.6.6\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n" + rest + "X Forwarded-For: 6.6.6.6\r\nTransfer Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n" + rest + "sec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade, Host, Origin, Cookie, Sec-WebSocket-Key, X-Real-IP, Keep-Alive, X-Hop\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + testKey + "\r\nOrigin: http://a\r\nCookie: c=1\r\nX-Hop: 1\r\nKeep-Alive: 1\r\n\r\n",
		"GET http://Other.Host:81/p?q HTTP/1.1\r\nHost: a\r\n" + rest + "\r\n",
		"GET ws://u@b?q HTTP/1.1\r\nhost: a\r\n" + rest + "\r\n",
		"GET //a://b/c HTTP/1.1\r\nHost: a\r\n" + rest + "\r\n",
		"GET /r?to=http://b/ HTTP/1.1\r\nHost: a\r\n" + rest + "x-forwarded-for: 1.1.1.1\r\nX-REAL-IP: 2.2.2.2\r\n\r\n",
		"GET * HTTP/1.1\r\nHost: a\r\n" + rest + "\r\n",
		"GET / HTTP/1.1\nHost: a\n" + rest + "Transfer-Encoding: chunked\r\nX-Client-DN: CN=forged\r\n\r\n",
	} {
		f.Add(seed)
	}
	hopByHopNames := []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding"}
	f.Fuzz(func(t *testing.T, raw string) {
		var h fasthttp.RequestHeader
		h.DisableNormalizing()
		if h.Read(bufio.NewReader(strings.NewReader(raw))) != nil || !isUpgrade(&h) {
			return
		}
		key, herr := checkClientHandshake(&h)
		if herr != nil {
			return
		}
		fw := forwardedFor(&h)
		out := appendUpgradeRequestHead(nil, &h, fw)

		var back fasthttp.RequestHeader
		back.DisableNormalizing()
		if err := back.Read(bufio.NewReader(bytes.NewReader(out))); err != nil {
			t.Fatalf("forwarded head unreadable to fasthttp: %v\n%q", err, out)
		}
		host, path := routedBy(&h)
		if h2, p2 := routedBy(&back); h2 != host || p2 != path {
			t.Fatalf("routed by %q %q, forwarded as %q %q:\n%q\n%q", host, path, h2, p2, raw, out)
		}

		if _, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw))); err != nil {
			return // net/http reads the client's head otherwise, or not at all
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(out)))
		if err != nil {
			t.Fatalf("forwarded head unreadable to net/http: %v\n%q", err, out)
		}
		for name, want := range map[string][]string{
			"Sec-WebSocket-Key":     {key},
			"Sec-WebSocket-Version": {"13"},
			"X-Forwarded-For":       {fw.xff()},
			"X-Real-IP":             {"127.0.0.1"},
			"Connection":            {"Upgrade"},
		} {
			if got := req.Header.Values(name); !slices.Equal(got, want) {
				t.Fatalf("%s %q, want %q:\n%q\n%q", name, got, want, raw, out)
			}
		}
		for _, name := range append(hopByHopNames, config.DefaultClientCertHeader) {
			if got := req.Header.Values(name); len(got) > 0 {
				t.Fatalf("%s %q forwarded:\n%q\n%q", name, got, raw, out)
			}
		}
	})
}
