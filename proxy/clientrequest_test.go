package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/syncbuf"
)

// okAnswer is a raw upstream's answer to every request.
func okAnswer(string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" }

// readAnswer reads everything the gateway sends on c until it closes, and
// parses it as one response.
func readAnswer(t *testing.T, c net.Conn) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(rawReadLimit))
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("no close from the gateway: %v (got %q)", err, raw)
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(raw))), nil)
	if err != nil {
		t.Fatalf("not a response: %q", raw)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// A head fasthttp cannot parse gets a one-line reason: never the head
// itself (its cookies), never the gateway's address, in the answer or in
// the error log.
func TestMalformedHeadEchoesNothing(t *testing.T) {
	var errLog syncbuf.Buffer
	g := startGatewayOpts(t, configFor(deadAddress(t)), Options{AccessLog: io.Discard, ErrorLog: &errLog})
	addr := g.Addrs()[0].String()
	const secret = "Cookie: session=s3cr3t-token\r\n"
	for _, head := range []string{
		"GET / HTTP/1.1\r\nHost: a.test\r\n" + secret + "no colon here\r\n\r\n",
		"GET /\r\nHost: a.test\r\n" + secret + "\r\n",
		"GET / HTTP/1.1\r\n" + secret + "\r\n", // HTTP/1.1 without Host
		"G\x01T / HTTP/1.1\r\nHost: a.test\r\n" + secret + "\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, head)
		resp, body := readAnswer(t, c)
		c.Close()
		if resp.StatusCode != 400 || body != "malformed request\n" {
			t.Errorf("%q: %d %q, want 400 \"malformed request\"", head, resp.StatusCode, body)
		}
	}
	if log := errLog.String(); strings.Contains(log, "s3cr3t") {
		t.Errorf("the error log quotes the request head:\n%s", log)
	}
}

// CONNECT is refused at the edge, as nginx does: 405 with Allow, and no
// upstream is contacted.
func TestConnectRefused(t *testing.T) {
	up, heads := rawHTTPUpstream(t, okAnswer)
	addr := gatewayFor(t, up)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(rawReadLimit))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
	if resp.StatusCode != 405 || resp.Header.Get("Allow") == "" || strings.Contains(resp.Header.Get("Allow"), "CONNECT") {
		t.Fatalf("CONNECT got %d Allow %q %q, want 405 with an Allow without CONNECT", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
	// The CONNECT was answered before this request was sent: the first
	// head the upstream sees is this one if the CONNECT never reached it.
	if status, _ := exchange(t, addr, "GET", "/after", ""); status != 200 {
		t.Fatalf("GET after the CONNECT: %d", status)
	}
	if head := recvHead(t, heads); !strings.HasPrefix(head, "GET /after ") {
		t.Fatalf("the upstream got %q", head)
	}
}

// A client that sends no complete head within timeouts.handshake, on a
// plain or a TLS connection, gets 408 with a reason that names no address;
// one that closes in the middle of its head gets 400. Each connection is
// logged once: one access log line, nothing in the error log.
func TestRequestHeadTimeoutAndCut(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	cfg := configFor(deadAddress(t))
	cfg.Timeouts.Handshake = config.Duration(time.Second)
	cfg.Listeners = append(cfg.Listeners, config.Listener{Address: "127.0.0.1:0",
		TLS: &config.TLS{Certificates: []config.Certificate{ca.server(t, "s", 2, "s.test")}}})
	cfg.ApplyDefaults()
	var accessLog, errLog syncbuf.Buffer
	g := startGatewayOpts(t, cfg, Options{AccessLog: &accessLog, ErrorLog: &errLog})
	plainAddr, tlsAddr := g.Addrs()[0].String(), g.Addrs()[1].String()

	const partial = "GET /x HTTP/1.1\r\nHost: s.test\r\nCookie: session=s3cr3t\r\n"
	for _, tc := range []struct {
		name       string
		tls        bool
		send       string
		cut        bool
		status     int
		body, line string
	}{
		{"plain, nothing", false, "", false, 408, "request not received in time\n", " - - - upstream=- status=408 "},
		{"plain, part of a head", false, partial, false, 408, "request not received in time\n", " - - - upstream=- status=408 "},
		{"TLS, nothing", true, "", false, 408, "request not received in time\n", " - - - upstream=- status=408 "},
		{"TLS, part of a head", true, partial, false, 408, "request not received in time\n", " - - - upstream=- status=408 "},
		{"plain, head cut", false, partial, true, 400, "request cut short\n", " - - - upstream=- status=400 "},
		{"TLS, head cut", true, partial, true, 400, "request cut short\n", " - - - upstream=- status=400 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := plainAddr
			if tc.tls {
				addr = tlsAddr
			}
			tcp, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer tcp.Close()
			c := tcp
			if tc.tls {
				tc := tls.Client(tcp, &tls.Config{RootCAs: ca.Pool, ServerName: "s.test"})
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				c = tc
			}
			io.WriteString(c, tc.send)
			if tc.cut {
				c.(interface{ CloseWrite() error }).CloseWrite()
			}
			resp, body := readAnswer(t, c)
			if resp.StatusCode != tc.status || body != tc.body {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
			// fasthttp writes its own log line, if any, before it closes
			// the conn; access log lines are written before the answer,
			// and flushed together.
			me := tcp.LocalAddr().String()
			waitForLog(t, &accessLog, " "+me+" ")
			if n := strings.Count(accessLog.String(), " "+me+" "); n != 1 {
				t.Errorf("%d access log lines for %s:\n%s", n, me, accessLog.String())
			}
			if line := lineWith(accessLog.String(), " "+me+" "); !strings.Contains(line, tc.line) {
				t.Errorf("access log line %q, want %q in it", line, tc.line)
			}
			if strings.Contains(errLog.String(), me) {
				t.Errorf("the error log names %s too:\n%s", me, errLog.String())
			}
		})
	}
	if log := errLog.String(); strings.Contains(log, "s3cr3t") {
		t.Errorf("the error log quotes a request head:\n%s", log)
	}
}

// An HTTP/1.0 request without Host takes the routes without a host, and
// reaches the upstream with the server's address as its Host.
func TestHTTP10WithoutHost(t *testing.T) {
	up, heads := rawHTTPUpstream(t, okAnswer)
	other, otherHeads := rawHTTPUpstream(t, okAnswer)
	cfg := configFor(up)
	cfg.Upstreams["named"] = &config.Upstream{Servers: []config.Server{{Address: other, Weight: 1}}}
	cfg.Routes = append(cfg.Routes, config.Route{Host: "named.test", Path: "/", Upstream: "named"})
	addr := startGateway(t, cfg).Addrs()[0].String()
	for _, req := range []string{
		"GET /old HTTP/1.0\r\n\r\n",
		"POST /old HTTP/1.0\r\nContent-Length: 4\r\n\r\nbody",
	} {
		answer := rawRequest(t, addr, req)
		if !strings.HasPrefix(answer, "HTTP/1.1 200 ") || !strings.HasSuffix(answer, "ok") {
			t.Fatalf("%q got %q", req, answer)
		}
		head := recvHead(t, heads)
		if hosts := headerValues(head, "Host"); len(hosts) != 1 || hosts[0] != up {
			t.Fatalf("%q reached the upstream with Host %q, want %q:\n%s", req, hosts, up, head)
		}
	}
	select {
	case head := <-otherHeads:
		t.Fatalf("the named host's upstream got %q", head)
	default:
	}
}

// A client that connects to a TLS listener and never finishes its
// handshake cannot be answered; its connection is closed and the error log
// says so once, the way it says why any handshake failed.
func TestTLSHandshakeTimeoutLogged(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	cfg := configFor(deadAddress(t))
	cfg.Timeouts.Handshake = config.Duration(500 * time.Millisecond)
	cfg.Listeners[0].TLS = &config.TLS{Certificates: []config.Certificate{ca.server(t, "s", 2, "s.test")}}
	cfg.ApplyDefaults()
	var errLog syncbuf.Buffer
	g := startGatewayOpts(t, cfg, Options{AccessLog: io.Discard, ErrorLog: &errLog})
	for _, hello := range []string{"", "\x16\x03\x01\x02\x00\x01"} { // nothing; a hello cut short
		c, err := net.Dial("tcp", g.Addrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, hello)
		c.SetReadDeadline(time.Now().Add(rawReadLimit))
		if got, err := io.ReadAll(c); err != nil || len(got) > 0 {
			t.Fatalf("hello %q: got %q, %v; want a close", hello, got, err)
		}
		me := c.LocalAddr().String()
		waitForLog(t, &errLog, me+`": tls handshake: not done within 500ms`)
		if n := strings.Count(errLog.String(), me); n != 1 {
			t.Errorf("%d error log lines for %s:\n%s", n, me, errLog.String())
		}
	}
}
