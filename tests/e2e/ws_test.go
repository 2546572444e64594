package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testpki"
)

// startWSServer returns the port of apps/ws/server.js, started once per
// test binary (it keeps no state between connections). It stands for the
// nginx example's 127.0.0.1:3000, on a free port so that the tests do not
// depend on 3000 being unused.
func startWSServer(t *testing.T) int {
	t.Helper()
	_, port := sharedPeer(t, "ws-server", "node", func(port int) []string {
		return []string{"apps/ws/server.js", "--port", fmt.Sprint(port)}
	})
	return port
}

// TestWSHostRoute is the classic nginx setup (`server_name ws.repo;`
// proxying to a node ws server) as a wsgate host route. Chromium resolves
// ws.repo to 127.0.0.1 and runs new WebSocket('ws://ws.repo:PORT/'): the
// greeting arrives, an echo round trip works, and the server saw the Host
// the browser sent. Requests for another host get the gateway's 404.
func TestWSHostRoute(t *testing.T) {
	// Parallel: most of the test is waiting on timers and pushes, and 2 at
	// a time (GOMAXPROCS on CI) keeps the package well inside its budget.
	t.Parallel()
	requirePeers(t)
	up := startWSServer(t)
	gw := freePort(t)
	startWsgate(t, gw, fmt.Sprintf(`
listeners:
  - address: 127.0.0.1:%d
routes:
  - host: ws.repo
    path: /
    upstream: ws_server
upstreams:
  ws_server:
    servers:
      - address: 127.0.0.1:%d
`, gw, up))
	checkWSHostRoute(t, gw, nil, nil)
}

// TestWSHostRouteWSS is TestWSHostRoute over TLS, the nginx server block
// with `listen 443 ssl;`: the gateway's listener serves a certificate for
// ws.repo from a CA made here, Chromium trusts that certificate's key and
// runs new WebSocket('wss://ws.repo:PORT/'), and the ws server, plain
// behind the gateway, sees X-Forwarded-Proto: https. The listener has a
// second certificate, for untrusted.repo, issued by the same CA but with a
// key Chromium was not told about: Chromium must refuse it, which shows
// that the browser trusts that one key and not every certificate.
func TestWSHostRouteWSS(t *testing.T) {
	t.Parallel()
	requirePeers(t)
	up := startWSServer(t)
	ca := newTestCA(t)
	cert := ca.issue(t, "ws.repo")
	other := ca.issue(t, "untrusted.repo")
	gw := freePort(t)
	startWsgate(t, gw, fmt.Sprintf(`
listeners:
%sroutes:
  - host: ws.repo
    path: /
    upstream: ws_server
upstreams:
  ws_server:
    servers:
      - address: 127.0.0.1:%d
`, tlsListenerYAML(fmt.Sprintf("127.0.0.1:%d", gw), cert, other), up))
	// Both certificates are valid under the CA for their names and served
	// by SNI: Chromium's refusal of the second one is about its key only.
	ca.checkServed(t, gw, "ws.repo", cert)
	ca.checkServed(t, gw, "untrusted.repo", other)
	checkWSHostRoute(t, gw, ca, &cert)
}

// checkWSHostRoute runs scenarios/ws_host.js against the gateway on port
// gw, routing Host ws.repo to apps/ws/server.js, and checks the page, the
// greeting (Host, X-Forwarded-For and X-Forwarded-Proto as the server saw
// them), the echo, and the 404 for another host. With ca and cert (the
// gateway's TLS certificate for ws.repo) it is all over https:// and
// wss://, Chromium trusting cert's key only, and it checks that a
// certificate for untrusted.repo on the same listener is refused.
func checkWSHostRoute(t *testing.T, gw int, ca *testCA, cert *testpki.Cert) {
	t.Helper()
	scheme, wsScheme := "http", "ws"
	var o browserOpts
	args := []string{fmt.Sprintf("http://ws.repo:%d/", gw)}
	if cert != nil {
		scheme, wsScheme = "https", "wss"
		o.TrustSPKI = []string{cert.SPKIHash()}
		args = []string{fmt.Sprintf("https://ws.repo:%d/", gw), fmt.Sprintf("https://untrusted.repo:%d/", gw)}
	}
	out := runBrowserOpts(t, o, "scenarios/ws_host.js", args...)
	var got struct {
		URL      string `json:"url"`
		Greeting struct {
			Type   string  `json:"type"`
			Server string  `json:"server"`
			Host   string  `json:"host"`
			XFF    string  `json:"xff"`
			Proto  *string `json:"proto"`
		} `json:"greeting"`
		Sent          string      `json:"sent"`
		Echo          string      `json:"echo"`
		PageStatus    int         `json:"pageStatus"`
		PageTitle     string      `json:"pageTitle"`
		Origin        string      `json:"origin"`
		TLS           *browserTLS `json:"tls"`
		UntrustedWS   string      `json:"untrustedWS"`
		UntrustedPage string      `json:"untrustedPage"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("browser result %q: %v", out, err)
	}
	wantHost := fmt.Sprintf("ws.repo:%d", gw)
	if got.PageStatus != 200 || got.PageTitle != "ws behind wsgate" {
		t.Errorf("page %s://%s/: status %d, title %q; want 200 and the ws server's page", scheme, wantHost, got.PageStatus, got.PageTitle)
	}
	if want := scheme + "://" + wantHost; got.Origin != want {
		t.Errorf("page origin %q, want %q", got.Origin, want)
	}
	if want := wsScheme + "://" + wantHost + "/"; got.URL != want {
		t.Errorf("the page's WebSocket URL %q, want %q", got.URL, want)
	}
	if got.Greeting.Type != "greeting" || got.Greeting.Server != "ws-server" {
		t.Errorf("first message %+v, want the ws server's greeting", got.Greeting)
	}
	if got.Greeting.Host != wantHost {
		t.Errorf("the ws server saw Host %q, want %q unchanged", got.Greeting.Host, wantHost)
	}
	if got.Greeting.XFF != "127.0.0.1" {
		t.Errorf("the ws server saw X-Forwarded-For %q, want 127.0.0.1", got.Greeting.XFF)
	}
	proto := "<none>"
	if got.Greeting.Proto != nil {
		proto = *got.Greeting.Proto
	}
	if proto != scheme {
		t.Errorf("the ws server saw X-Forwarded-Proto %s, want %s", proto, scheme)
	}
	if got.Echo != got.Sent || got.Sent == "" {
		t.Errorf("echo %q, want %q", got.Echo, got.Sent)
	}
	var sec browserTLS
	if cert != nil {
		if got.TLS == nil {
			t.Errorf("page https://%s/ has no TLS details", wantHost)
		} else {
			sec = *got.TLS
			if sec.SubjectName != "ws.repo" || sec.Issuer != "wsgate e2e test CA" || !strings.HasPrefix(sec.Protocol, "TLS 1.") {
				t.Errorf("page TLS %+v, want TLS 1.x with subject ws.repo issued by the test CA", sec)
			}
		}
		// The same CA, a key Chromium was not given: refused. A
		// browser trusting anything would have loaded the page (and got
		// the gateway's 404) and opened the WebSocket.
		if !strings.Contains(got.UntrustedPage, "ERR_CERT_AUTHORITY_INVALID") {
			t.Errorf("page https://untrusted.repo:%d/: %q, want net::ERR_CERT_AUTHORITY_INVALID", gw, got.UntrustedPage)
		}
		if got.UntrustedWS != "closed 1006" {
			t.Errorf("WebSocket wss://untrusted.repo:%d/: %q, want closed 1006 without opening", gw, got.UntrustedWS)
		}
	} else if got.TLS != nil {
		t.Errorf("page http://%s/ has TLS details %+v", wantHost, *got.TLS)
	}
	t.Logf("Chromium on %s (page %s, TLS %+v): greeting from %s, Host %s, X-Forwarded-For %s, X-Forwarded-Proto %s; echo round trip of %q",
		got.URL, got.Origin, sec, got.Greeting.Server, got.Greeting.Host, got.Greeting.XFF, proto, got.Sent)
	if cert != nil {
		t.Logf("untrusted.repo: page %q, WebSocket %q", got.UntrustedPage, got.UntrustedWS)
	}

	// Another host: a page request and a WebSocket handshake both get the
	// gateway's 404, as nginx answers for a server_name it does not have
	// (with no default server).
	client := &http.Client{Timeout: 5 * time.Second}
	var tc *tls.Config
	if cert != nil {
		// SNI ws.repo, verified under the CA; the Host header alone
		// decides the route.
		tc = ca.clientConfig("ws.repo")
		client.Transport = &http.Transport{TLSClientConfig: tc}
	}
	for _, host := range []string{"other.test", wantHost} {
		req, err := http.NewRequest("GET", fmt.Sprintf("%s://127.0.0.1:%d/", scheme, gw), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET / Host %s: %v", host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := 404
		if host == wantHost {
			want = 200 // the contrast: the same request for ws.repo is routed
		}
		if resp.StatusCode != want {
			t.Errorf("GET / Host %s: %d %q, want %d", host, resp.StatusCode, body, want)
		}
		if want == 404 && !strings.Contains(string(body), "no route for host other.test") {
			t.Errorf("GET / Host %s: body %q, want the gateway's no-route reason", host, body)
		}
	}
	if status := rawHandshake(t, gw, "other.test", tc); status != 404 {
		t.Errorf("WebSocket handshake with Host other.test: status %d, want 404", status)
	}
	if status := rawHandshake(t, gw, wantHost, tc); status != 101 {
		t.Errorf("WebSocket handshake with Host %s: status %d, want 101", wantHost, status)
	}
}

// rawHandshake sends a WebSocket handshake for host to the gateway on port,
// over TLS with tc when tc is not nil, and returns the response status.
func rawHandshake(t *testing.T, port int, host string, tc *tls.Config) int {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	d := &net.Dialer{Timeout: 5 * time.Second}
	var c net.Conn
	var err error
	if tc != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, tc)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("handshake with Host %s: %v", host, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
