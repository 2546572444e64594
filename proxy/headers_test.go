package proxy

import (
	"bufio"
	"net"
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

func TestSplitTarget(t *testing.T) {
	for in, want := range map[string][2]string{
		"/a?b": {"/a?b", "-"}, "*": {"*", "-"}, "http://h/a?b": {"/a?b", "h"}, "https://u:p@h:1/a": {"/a", "h:1"},
		"http://h": {"/", "h"}, "http://h?x": {"/?x", "h"}, "/redirect?to=http://x/": {"/redirect?to=http://x/", "-"},
	} {
		path, authority := splitTarget([]byte(in))
		a := "-"
		if authority != nil {
			a = string(authority)
		}
		if string(path) != want[0] || a != want[1] {
			t.Errorf("splitTarget(%q) = %q, %q; want %q, %q", in, path, a, want[0], want[1])
		}
	}
}

func TestRawHeadProblem(t *testing.T) {
	for raw, bad := range map[string]bool{
		"Host: a\r\nX-A: a\r\n\r\n":                          false,
		"Host: a\r\nX-A: a\r\n X-Forwarded-For: 6.6.6.6\r\n": true,
		"Host: a\r\nX-A: a\r\n\tmore\r\n":                    true,
		"Host: a\r\nX Forwarded-For: 6\r\n":                  true,
		"Host: a\r\nX-Forwarded-For : 6\r\n":                 true,
		"Host: a\r\n: v\r\n":                                 true,
	} {
		if got := rawHeadProblem([]byte(raw)) != ""; got != bad {
			t.Errorf("%q: problem %v, want %v", raw, got, bad)
		}
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
