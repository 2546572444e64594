package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/syncbuf"
	"github.com/wsgate/wsgate/internal/testpki"
)

// startTLSGateway starts a gateway whose one listener speaks TLS with tc,
// in front of upstream; the error log goes to errLog when it is not nil.
func startTLSGateway(t *testing.T, upstream string, tc *config.TLS, errLog io.Writer) *Gateway {
	t.Helper()
	cfg := configFor(upstream)
	cfg.Listeners[0].TLS = tc
	cfg.ApplyDefaults()
	if errLog == nil {
		errLog = testLog{t}
	}
	return startGatewayOpts(t, cfg, Options{AccessLog: io.Discard, ErrorLog: errLog, CertPollInterval: 50 * time.Millisecond})
}

// startTLSGatewayFile is startTLSGateway for one certificate, run from a
// configuration file as wsgate -config does, so that Reload (SIGHUP) reads
// it again.
func startTLSGatewayFile(t *testing.T, upstream string, cert config.Certificate, errLog io.Writer) *Gateway {
	t.Helper()
	path := filepath.Join(t.TempDir(), "wsgate.yaml")
	writeFile(t, path, "listeners:\n  - address: "+freeAddr(t)+"\n    tls:\n      certificates:\n"+
		"        - cert_file: "+cert.CertFile+"\n          key_file: "+cert.KeyFile+"\n"+
		"routes:\n  - path: /\n    upstream: backend\nupstreams:\n  backend:\n    servers:\n      - address: "+upstream+"\n")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return startGatewayOpts(t, cfg, Options{AccessLog: io.Discard, ErrorLog: errLog, CertPollInterval: 50 * time.Millisecond, ConfigPath: path})
}

// servedCert opens a TLS connection with the given SNI name (none when
// empty) and returns the leaf certificate the gateway presented, verified
// against roots for wantName.
func servedCert(t *testing.T, addr, sni string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake with SNI %q: %v", sni, err)
	}
	defer c.Close()
	leaf := c.ConnectionState().PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
		t.Fatalf("SNI %q: served certificate does not chain to the test CA: %v", sni, err)
	}
	return leaf
}

// Several certificates on one listener: each SNI name gets the certificate
// that names it (exact first, then wildcard), no SNI or an unknown name
// gets the first one, and a wss client that verifies chain and name works.
func TestTLSCertificatesBySNI(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	tc := &config.TLS{Certificates: []config.Certificate{
		ca.server(t, "default", 10, "default.test"),
		ca.server(t, "a", 11, "a.test"),
		ca.server(t, "wild", 12, "*.b.test"),
		ca.server(t, "exact", 13, "x.b.test"),
	}}
	g := startTLSGateway(t, echoUpstream(t, websocket.Upgrader{}), tc, nil)
	addr := g.Addrs()[0].String()
	for sni, serial := range map[string]int64{
		"": 10, "unknown.test": 10, "a.test": 11, "A.TEST": 11, "y.b.test": 12, "x.b.test": 13, "deep.y.b.test": 10,
	} {
		if got := servedCert(t, addr, sni, ca.Pool); got.SerialNumber.Int64() != serial {
			t.Errorf("SNI %q got serial %d, want %d", sni, got.SerialNumber, serial)
		}
	}

	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "y.b.test"}}
	c, _, err := d.Dial("wss://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c, "over wss with a wildcard certificate")
}

func echoOnce(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

// Old TLS versions are refused; min_version 1.3 refuses 1.2; a client that
// offers h2 and http/1.1 gets http/1.1 and its request is served, one that
// offers only h2 is refused.
func TestTLSVersionsAndALPN(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	g := startTLSGateway(t, up, &config.TLS{Certificates: []config.Certificate{ca.server(t, "s", 2, "s.test")}}, nil)
	addr := g.Addrs()[0].String()
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "s.test", MinVersion: v, MaxVersion: v})
		if err == nil {
			c.Close()
			t.Fatalf("a TLS %s client was accepted", tls.VersionName(v))
		}
	}

	if c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "s.test", NextProtos: []string{"h2"}}); err == nil {
		c.Close()
		t.Fatal("a client offering only h2 was accepted; wsgate speaks no HTTP/2")
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "s.test", NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Fatalf("ALPN chose %q", p)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: s.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 100))
	if resp.StatusCode != 200 || string(body) != "hello" {
		t.Fatalf("over http/1.1 ALPN: %d %q", resp.StatusCode, body)
	}

	g13 := startTLSGateway(t, up, &config.TLS{MinVersion: "1.3", Certificates: []config.Certificate{ca.server(t, "s13", 3, "s.test")}}, io.Discard)
	if c, err := tls.Dial("tcp", g13.Addrs()[0].String(), &tls.Config{RootCAs: ca.Pool, ServerName: "s.test", MaxVersion: tls.VersionTLS12}); err == nil {
		c.Close()
		t.Fatal("min_version 1.3 accepted a TLS 1.2 client")
	}
}

// Plain HTTP on the TLS port gets a 400 that says to use TLS; garbage gets
// a close; a tunnel that was open meanwhile is not disturbed.
func TestTLSPortRefusesPlainHTTPAndGarbage(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	g := startTLSGateway(t, echoUpstream(t, websocket.Upgrader{}), &config.TLS{Certificates: []config.Certificate{ca.server(t, "s", 2, "s.test")}}, io.Discard)
	addr := g.Addrs()[0].String()
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "s.test"}}
	live, _, err := d.Dial("wss://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	io.WriteString(plain, "GET / HTTP/1.1\r\nHost: s.test\r\n\r\n")
	plain.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, _ := io.ReadAll(plain)
	if !bytes.HasPrefix(answer, []byte("HTTP/1.1 400 ")) || !bytes.Contains(answer, []byte("use https:// or wss://")) {
		t.Fatalf("plain HTTP on the TLS port got %q", answer)
	}

	junk, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	junk.Write([]byte("\x16\x03\x01\x00\x05garbage that is not a ClientHello"))
	junk.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(junk); err != nil {
		t.Fatalf("garbage: the gateway did not close the connection: %v", err)
	}

	echoOnce(t, live, "still here")
}

// A certificate replaced on disk is served to the next handshake without a
// restart, and a tunnel opened before goes on; a corrupt replacement is
// refused with a log line and the certificate in use stays; SIGHUP's
// reload does the same on demand.
func TestTLSCertificateReload(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	errLog := &syncbuf.Buffer{}
	cert := ca.server(t, "live", 1, "s.test")
	g := startTLSGatewayFile(t, echoUpstream(t, websocket.Upgrader{}), cert, errLog)
	addr := g.Addrs()[0].String()
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "s.test"}}
	before, _, err := d.Dial("wss://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	// Renewal as certbot does it: new files moved into place.
	renewed := ca.server(t, "renewed", 2, "s.test")
	os.Rename(renewed.CertFile, cert.CertFile)
	os.Rename(renewed.KeyFile, cert.KeyFile)
	waitFor(t, "the renewed certificate", func() bool {
		return servedCert(t, addr, "s.test", ca.Pool).SerialNumber.Int64() == 2
	})
	echoOnce(t, before, "opened before the renewal")

	os.WriteFile(cert.CertFile, []byte("-----BEGIN CERTIFICATE-----\ntruncated"), 0o600)
	waitFor(t, "the refused reload in the log", func() bool {
		return strings.Contains(errLog.String(), "certificate reload refused, the certificates in use stay")
	})
	if got := servedCert(t, addr, "s.test", ca.Pool).SerialNumber.Int64(); got != 2 {
		t.Fatalf("after a corrupt replacement the gateway serves serial %d", got)
	}
	if _, err := g.Reload(); err == nil {
		t.Fatal("Reload accepted a corrupt certificate")
	}

	third := ca.server(t, "third", 3, "s.test")
	os.Rename(third.CertFile, cert.CertFile)
	os.Rename(third.KeyFile, cert.KeyFile)
	if _, err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := servedCert(t, addr, "s.test", ca.Pool).SerialNumber.Int64(); got != 3 {
		t.Fatalf("after Reload: serial %d", got)
	}
	echoOnce(t, before, "still open after two reloads")
}

// A replacement certificate that is not valid yet (NotBefore ahead) is
// refused as -check refuses it, by the poll and by SIGHUP's reload alike:
// handshakes that run all the while, verifying as a client does, keep
// getting the certificate in use, and the error log names the file.
func TestTLSReloadRefusesNotYetValidCertificate(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	errLog := &syncbuf.Buffer{}
	cert := ca.server(t, "live", 1, "s.test")
	g := startTLSGatewayFile(t, echoUpstream(t, websocket.Upgrader{}), cert, errLog)
	addr := g.Addrs()[0].String()

	var handshakes atomic.Int64
	failed := make(chan error, 1)
	stop, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		d := &tls.Dialer{Config: &tls.Config{RootCAs: ca.Pool, ServerName: "s.test"}}
		d.NetDialer = &net.Dialer{Timeout: 5 * time.Second}
		for range 100000 {
			select {
			case <-stop:
				return
			default:
			}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				failed <- err
				return
			}
			serial := c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Int64()
			c.Close()
			if serial != 1 {
				failed <- fmt.Errorf("handshake got serial %d", serial)
				return
			}
			handshakes.Add(1)
		}
	}()
	defer func() { close(stop); <-finished }()
	// whileHandshaking waits for cond, failing at once if a handshake
	// does; handshaking waits for n more handshakes.
	whileHandshaking := func(what string, cond func() bool) {
		t.Helper()
		var err error
		waitFor(t, what, func() bool {
			select {
			case err = <-failed:
				return true
			default:
				return cond()
			}
		})
		if err != nil {
			t.Fatalf("after %d good handshakes: %v\nerror log:\n%s", handshakes.Load(), err, errLog)
		}
	}
	handshaking := func(n int64) {
		t.Helper()
		want := handshakes.Load() + n
		whileHandshaking("handshakes", func() bool { return handshakes.Load() >= want })
	}
	handshaking(3)

	future := ca.Issue(t, testpki.Options{Names: []string{"s.test", "127.0.0.1"}, Serial: 2, File: "future",
		NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(48 * time.Hour)})
	for from, to := range map[string]string{future.CertFile: cert.CertFile, future.KeyFile: cert.KeyFile} {
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	refusal := fmt.Sprintf("tls: certificate reload refused, the certificates in use stay: %q is not valid before ", cert.CertFile)
	whileHandshaking("the refused reload in the log", func() bool {
		return strings.Contains(errLog.String(), refusal)
	})
	handshaking(3)
	if _, err := g.Reload(); err == nil {
		t.Fatal("Reload accepted a certificate not valid yet")
	}
	handshaking(3)
	if strings.Contains(errLog.String(), "certificates reloaded") {
		t.Fatalf("a reload was accepted:\n%s", errLog)
	}
}

// Mutual TLS: with require, a client without a certificate is refused;
// with one, the upstream learns its subject in the configured header, and
// a copy of that header sent by the client never reaches the upstream
// (WebSocket and plain HTTP paths alike).
func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	seen := make(chan http.Header, 4)
	up := recordingUpstream(t, seen)
	for _, auth := range []string{config.ClientAuthRequire, config.ClientAuthVerifyIfGiven} {
		t.Run(auth, func(t *testing.T) {
			tc := &config.TLS{
				Certificates: []config.Certificate{ca.server(t, "s-"+auth, 2, "s.test")},
				ClientCAFile: ca.File, ClientAuth: auth, ClientCertHeader: "X-Client-DN",
			}
			g := startTLSGateway(t, up, tc, io.Discard)
			addr := g.Addrs()[0].String()
			forged := http.Header{"x-client-dn": {"CN=admin"}}

			// No certificate.
			d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "s.test"}, HandshakeTimeout: 5 * time.Second}
			c, _, err := d.Dial("wss://"+addr+"/", forged)
			if auth == config.ClientAuthRequire {
				if err == nil {
					c.Close()
					t.Fatal("a client without a certificate got through")
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				if h := recvHeader(t, seen); h.Get("X-Client-DN") != "" {
					t.Fatalf("without a certificate the upstream saw X-Client-DN %q", h.Get("X-Client-DN"))
				}
			}

			// A certificate from the CA, plus a forged header.
			alice := ca.client(t, "alice-"+auth, pkix.Name{CommonName: "alice", Organization: []string{"Example"}})
			d.TLSClientConfig.Certificates = []tls.Certificate{alice}
			c, _, err = d.Dial("wss://"+addr+"/", forged)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if got := recvHeader(t, seen)["X-Client-Dn"]; len(got) != 1 || got[0] != "CN=alice,O=Example" {
				t.Fatalf("websocket: upstream saw X-Client-DN %q, want only CN=alice,O=Example", got)
			}

			client := &http.Client{Transport: &http.Transport{TLSClientConfig: d.TLSClientConfig}}
			req, _ := http.NewRequest("GET", "https://"+addr+"/page", nil)
			req.Header["x-CLIENT-dn"] = []string{"CN=root"}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			client.CloseIdleConnections()
			if resp.StatusCode != 200 {
				t.Fatalf("http over mutual TLS: %s", resp.Status)
			}
			if got := recvHeader(t, seen)["X-Client-Dn"]; len(got) != 1 || got[0] != "CN=alice,O=Example" {
				t.Fatalf("http: upstream saw X-Client-DN %q, want only CN=alice,O=Example", got)
			}
		})
	}
}

// recordingUpstream sends the headers of every request it gets to seen,
// then answers "ok", or completes a WebSocket handshake and closes.
func recordingUpstream(t *testing.T, seen chan<- http.Header) string {
	return serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		if websocket.IsWebSocketUpgrade(r) {
			if c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil); err == nil {
				c.Close()
			}
			return
		}
		io.WriteString(w, "ok")
	}))
}

// A client-certificate header is the gateway's word, whichever listener a
// request comes through: every certificate header name the gateway knows
// (each mTLS listener's and the default), in any case and in the
// underscore spelling CGI, WSGI and PHP read as the same variable, is
// removed on plain, TLS and mutual-TLS listeners alike, on the HTTP path
// and the WebSocket handshake; an mTLS listener then sends its own header
// with the verified subject, and only that.
func TestForgedClientCertHeaderRemovedOnEveryListener(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	seen := make(chan http.Header, 4)
	cfg := configFor(recordingUpstream(t, seen))
	mtls := func(base, header string) *config.TLS {
		return &config.TLS{Certificates: []config.Certificate{ca.server(t, base, 2, "s.test")},
			ClientCAFile: ca.File, ClientCertHeader: header}
	}
	cfg.Listeners = []config.Listener{
		{Address: "127.0.0.1:0"},
		{Address: "127.0.0.1:0", TLS: &config.TLS{Certificates: []config.Certificate{ca.server(t, "tls", 2, "s.test")}}},
		{Address: "127.0.0.1:0", TLS: mtls("mtls-dn", "X-Client-DN")},
		{Address: "127.0.0.1:0", TLS: mtls("mtls-peer", "X-Peer-Cert")},
	}
	cfg.ApplyDefaults()
	g := startGateway(t, cfg)
	addrs := g.Addrs()

	certNames := []string{"X-Client-DN", "X-Peer-Cert", config.DefaultClientCertHeader}
	// isCertName tells a certificate header whatever its spelling, as a
	// CGI-style backend would read it.
	isCertName := func(name string) bool {
		for _, n := range certNames {
			if strings.EqualFold(strings.ReplaceAll(name, "_", "-"), n) {
				return true
			}
		}
		return false
	}
	forged := http.Header{}
	for _, n := range certNames {
		forged[strings.ToLower(n)] = []string{"CN=admin"}
		forged[strings.ReplaceAll(n, "-", "_")] = []string{"CN=root"}
	}

	alice := ca.client(t, "alice", pkix.Name{CommonName: "alice", Organization: []string{"Example"}})
	tlsConf := &tls.Config{RootCAs: ca.Pool, ServerName: "s.test", Certificates: []tls.Certificate{alice}}
	for _, l := range []struct {
		name, scheme string
		addr         net.Addr
		certHeader   string // the header the listener sets, canonical
	}{
		{"plain", "http", addrs[0], ""},
		{"tls", "https", addrs[1], ""},
		{"mtls X-Client-DN", "https", addrs[2], "X-Client-Dn"},
		{"mtls X-Peer-Cert", "https", addrs[3], "X-Peer-Cert"},
	} {
		check := func(path string, h http.Header) {
			t.Helper()
			for name, values := range h {
				if isCertName(name) && (name != l.certHeader || len(values) != 1 || values[0] != "CN=alice,O=Example") {
					t.Errorf("%s, %s: the upstream saw %s: %q", l.name, path, name, values)
				}
			}
			if l.certHeader != "" && h.Get(l.certHeader) != "CN=alice,O=Example" {
				t.Errorf("%s, %s: the upstream saw %s %q, want the verified subject", l.name, path, l.certHeader, h.Get(l.certHeader))
			}
		}

		client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}, Timeout: 5 * time.Second}
		req, _ := http.NewRequest("GET", l.scheme+"://"+l.addr.String()+"/page", nil)
		req.Header = forged
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", l.name, err)
		}
		resp.Body.Close()
		client.CloseIdleConnections()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", l.name, resp.Status)
		}
		check("http", recvHeader(t, seen))

		d := websocket.Dialer{TLSClientConfig: tlsConf, HandshakeTimeout: 5 * time.Second}
		wsScheme := map[string]string{"http": "ws", "https": "wss"}[l.scheme]
		c, _, err := d.Dial(wsScheme+"://"+l.addr.String()+"/ws", forged)
		if err != nil {
			t.Fatalf("%s: websocket: %v", l.name, err)
		}
		c.Close()
		check("websocket", recvHeader(t, seen))
	}
}

// recvHeader waits up to 5 s for the headers an upstream saw.
func recvHeader(t *testing.T, seen <-chan http.Header) http.Header {
	t.Helper()
	select {
	case h := <-seen:
		return h
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the upstream")
		return nil
	}
}

// redirect_https: requests get a 308 to the https port with the same host,
// path and query; an upgrade gets a 400 naming the wss URL.
func TestRedirectHTTPS(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	cfg := configFor(echoUpstream(t, websocket.Upgrader{}))
	cfg.Listeners = []config.Listener{
		{Address: "127.0.0.1:0", RedirectHTTPS: true},
		{Address: "127.0.0.1:0", TLS: &config.TLS{Certificates: []config.Certificate{ca.server(t, "s", 2, "s.test")}}},
	}
	cfg.ApplyDefaults()
	g := startGateway(t, cfg)
	plainAddr := g.Addrs()[0].String()
	_, tlsPort, _ := net.SplitHostPort(g.Addrs()[1].String())

	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, method := range []string{"GET", "POST"} {
		req, _ := http.NewRequest(method, "http://"+plainAddr+"/chat/room?x=1", nil)
		req.Host = "s.test"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := "https://s.test:" + tlsPort + "/chat/room?x=1"; resp.StatusCode != 308 || resp.Header.Get("Location") != want {
			t.Fatalf("%s: %d Location %q, want 308 %q", method, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}

	_, resp, err := websocket.DefaultDialer.Dial("ws://"+plainAddr+"/chat", http.Header{"Host": {"s.test"}})
	if err == nil || resp == nil || resp.StatusCode != 400 {
		t.Fatalf("upgrade on a redirect listener: %v %v", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if want := "wss://s.test:" + tlsPort + "/chat"; !strings.Contains(string(body), want) {
		t.Fatalf("400 body %q does not name %s", body, want)
	}
}

// redirect_https builds Location from the Host header and the target's
// path and query: an absolute-form target's scheme and host never reach it.
func TestRedirectHTTPSAbsoluteForm(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	cfg := configFor(deadAddress(t))
	cfg.Listeners = []config.Listener{
		{Address: "127.0.0.1:0", RedirectHTTPS: true},
		{Address: "127.0.0.1:0", TLS: &config.TLS{Certificates: []config.Certificate{ca.server(t, "s", 2, "s.test")}}},
	}
	cfg.ApplyDefaults()
	g := startGateway(t, cfg)
	plainAddr := g.Addrs()[0].String()
	_, tlsPort, _ := net.SplitHostPort(g.Addrs()[1].String())
	for target, want := range map[string]string{
		"http://evil.test/x?y=1": "/x?y=1",
		"http://evil.test":       "/",
		"http://evil.test?y=1":   "/?y=1",
		"//evil.test/x":          "//evil.test/x",
		"/a/../b?c":              "/a/../b?c",
	} {
		answer := rawRequest(t, plainAddr, "GET "+target+" HTTP/1.1\r\nHost: s.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(answer)), nil)
		if err != nil {
			t.Fatalf("%s: %q", target, answer)
		}
		if want := "https://s.test:" + tlsPort + want; resp.StatusCode != 308 || resp.Header.Get("Location") != want {
			t.Errorf("%s: %d Location %q, want 308 %q", target, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}
}

// wss:// through a TLS listener: the client verifies the gateway's
// certificate, the tunnel runs over crypto/tls on the client side, and the
// upstream learns the original scheme.
func TestWSSEcho(t *testing.T) {
	protos := make(chan string, 1)
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case protos <- r.Header.Get("X-Forwarded-Proto"):
		default:
		}
		u := websocket.Upgrader{}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadLimit(8 << 20)
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil || c.WriteMessage(mt, msg) != nil {
				return
			}
		}
	}))
	ca := newTestCA(t, "wsgate test CA")
	cfg := configFor(up)
	cfg.Listeners[0].TLS = &config.TLS{Certificates: []config.Certificate{ca.server(t, "ws", 2, "ws.test")}}
	g := startGateway(t, cfg)

	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "ws.test"}}
	c, _, err := d.Dial("wss://"+g.Addrs()[0].String()+"/secure", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadLimit(8 << 20)
	if p := <-protos; p != "https" {
		t.Fatalf("X-Forwarded-Proto %q, want https", p)
	}
	for _, size := range []int{0, 125, 65536, 1 << 20} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.ReadMessage(); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("size %d: %d bytes back, %v", size, len(got), err)
		}
	}
}

// idleTLSUpstream answers WebSocket handshakes over TLS and then holds the
// connections without a goroutine each, so the goroutines of a test's
// process are the gateway's.
func idleTLSUpstream(t *testing.T, ca *testCA) string {
	ln := tlsBackend(t, ca, "backend.test", nil)
	var held []net.Conn
	stopped := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-stopped
		for _, c := range held {
			c.Close()
		}
	})
	go func() {
		defer close(stopped)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			req, err := http.ReadRequest(bufio.NewReader(c))
			if err != nil {
				c.Close()
				continue
			}
			io.WriteString(c, switchingProtocols(req))
			c.SetDeadline(time.Time{})
			held = append(held, c)
		}
	}()
	return ln.Addr().String()
}

// A wss:// tunnel to a TLS upstream is carried by the event loops: holding
// many of them idle adds no goroutine per tunnel (a goroutine per
// direction would add two).
func TestWSSTunnelsHoldNoGoroutines(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	cfg := tlsConfigFor(&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}, idleTLSUpstream(t, ca))
	cfg.Listeners[0].TLS = &config.TLS{Certificates: []config.Certificate{ca.server(t, "ws", 2, "ws.test")}}
	g := startGateway(t, cfg)
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "ws.test"}}
	url := "wss://" + g.Addrs()[0].String() + "/"
	open := func() {
		c, _, err := d.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	open() // warm-up: pools, the first conns
	waitFor(t, "warm-up tunnel", func() bool { return g.ActiveTunnels() == 1 })
	base := goroutinesOutsideWorkerPool()
	const n = 200
	for range n {
		open()
	}
	waitFor(t, "tunnels registered", func() bool { return g.ActiveTunnels() == n+1 })
	// Goroutines that served the handshakes end on their own: poll until
	// the count is under the bound, for a while.
	var now int
	for range 250 {
		if now = goroutinesOutsideWorkerPool(); now-base < n/4 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%d idle wss tunnels added %d goroutines", n, now-base)
}

// A drain ends a wss:// tunnel as it ends a plain one: with a Close 1001
// the client reads inside TLS, not a bare close it would report as 1006.
// Its messages are counted as a plain tunnel's are.
func TestWSSDrainSaysGoingAway(t *testing.T) {
	ca := newTestCA(t, "wsgate test CA")
	for _, tlsUp := range []bool{false, true} {
		var cfg *config.Config
		if tlsUp {
			up := serveOn(t, tlsBackend(t, ca, "backend.test", nil), echoHandler(websocket.Upgrader{}))
			cfg = tlsConfigFor(&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}, up)
		} else {
			cfg = configFor(echoUpstream(t, websocket.Upgrader{}))
		}
		cfg.Listeners[0].TLS = &config.TLS{Certificates: []config.Certificate{ca.server(t, "ws", 2, "ws.test")}}
		cfg.Timeouts.Drain = config.Duration(100 * time.Millisecond)
		var log syncbuf.Buffer
		g := startGatewayLogging(t, cfg, &log)
		d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "ws.test"}}
		c, _, err := d.Dial("wss://"+g.Addrs()[0].String()+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echoOnce(t, c, "before the drain")
		done := make(chan error, 1)
		go func() { done <- g.Shutdown(context.Background()) }()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err = c.ReadMessage()
		if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("TLS upstream %v: after the drain: %v, want close 1001", tlsUp, err)
		}
		c.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("TLS upstream %v: Shutdown did not return", tlsUp)
		}
		// "before the drain" went up masked (2+4+16 bytes) and came back.
		waitFor(t, "the tunnel's log line", func() bool { return strings.Contains(log.String(), "status=101") })
		if line := lineWith(log.String(), "status=101"); !strings.Contains(line, " up=22 down=18 msgs_up=1 msgs_down=1 closed_by=drain") {
			t.Errorf("TLS upstream %v: access log %q, want up=22 down=18 msgs_up=1 msgs_down=1 closed_by=drain", tlsUp, line)
		}
	}
}
