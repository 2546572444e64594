package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/syncbuf"
)

// tlsBackend is a listener on 127.0.0.1 serving a certificate for name
// signed by ca; clientCAs, when not nil, makes it require a client
// certificate signed by one of them.
func tlsBackend(t testing.TB, ca *testCA, name string, clientCAs *x509.CertPool) net.Listener {
	t.Helper()
	_, _, pair := ca.issue(t, name, false)
	tc := &tls.Config{Certificates: []tls.Certificate{pair}}
	if clientCAs != nil {
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		tc.ClientCAs = clientCAs
	}
	return tls.NewListener(listenLocal(t), tc)
}

// startGatewayErrors starts a gateway whose error log the test can read.
func startGatewayErrors(t testing.TB, cfg *config.Config) (*Gateway, *syncbuf.Buffer) {
	t.Helper()
	var errs syncbuf.Buffer
	return startGatewayOpts(t, cfg, Options{AccessLog: io.Discard, ErrorLog: io.MultiWriter(&errs, testLog{t})}), &errs
}

// tlsConfigFor is configFor with tls on the upstream.
func tlsConfigFor(ut *config.UpstreamTLS, servers ...string) *config.Config {
	cfg := configFor(servers...)
	cfg.Upstreams["backend"].TLS = ut
	return cfg
}

// A wss:// backend with its own CA: messages of every length class go
// both ways, the close code comes back, and the event-loop relay carries
// the tunnel, TLS and all.
func TestUpstreamTLSEcho(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	up := serveOn(t, tlsBackend(t, ca, "backend.test", nil), echoHandler(websocket.Upgrader{}))
	for _, tc := range []struct {
		name string
		ut   *config.UpstreamTLS
	}{
		{"server_name", &config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}},
		// No server_name: the certificate is checked against the host of
		// the server's address, 127.0.0.1.
		{"address", &config.UpstreamTLS{Enabled: true, CAFile: ca.File}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startGateway(t, tlsConfigFor(tc.ut, up))
			c := dial(t, g.Addrs()[0].String(), "/", nil)
			c.SetReadLimit(8 << 20)
			for _, size := range []int{0, 1, 125, 126, 65535, 65536, 1 << 20, 3<<20 + 7} {
				msg := bytes.Repeat([]byte{byte(size)}, size)
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					t.Fatal(err)
				}
				if mt, got, err := c.ReadMessage(); err != nil || mt != websocket.BinaryMessage || !bytes.Equal(got, msg) {
					t.Fatalf("size %d: type %d, %d bytes back, %v", size, mt, len(got), err)
				}
			}
			g.mu.Lock()
			for tn := range g.tunnels.All {
				if _, ok := tn.(*relayedTunnel); !ok {
					t.Errorf("tunnel is a %T, want *relayedTunnel", tn)
				}
			}
			g.mu.Unlock()
			msg := websocket.FormatCloseMessage(4001, "client bye")
			if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			_, _, err := c.ReadMessage()
			if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 4001 || ce.Text != "client bye" {
				t.Fatalf("echoed close: %v", err)
			}
			// The upstream closed after its Close frame; the client closes
			// on reading it, which ends the tunnel's other half.
			c.Close()
			waitFor(t, "tunnel ended", func() bool { return g.ActiveTunnels() == 0 })
		})
	}
}

// Bytes in the same TLS record as the 101, and the client's frame in the
// same write as its handshake, are not lost; a client's FIN reaches the
// TLS upstream as close_notify, and what the upstream sends afterwards
// still reaches the client.
func TestUpstreamTLSEarlyBytesAndHalfClose(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	sawEOF := make(chan bool, 1)
	up := rawUpstreamOn(tlsBackend(t, ca, "backend.test", nil), func(c net.Conn, br *bufio.Reader, req *http.Request) {
		c.Write(append([]byte(switchingProtocols(req)), frame(opText, true, false, []byte("hello first"))...))
		f, err := readFrame(br)
		if err != nil || string(f.payload) != "client first" {
			return
		}
		_, err = br.ReadByte()
		sawEOF <- err == io.EOF
		c.Write(frame(opText, true, false, []byte("after your FIN")))
	})
	gw := startGateway(t, tlsConfigFor(&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}, up)).Addrs()[0].String()
	c, br, resp := rawClient(t, gw, frame(opText, true, true, []byte("client first")))
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if f, err := readFrame(br); err != nil || string(f.payload) != "hello first" {
		t.Fatalf("frame behind the 101: %+v, %v", f, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if !<-sawEOF {
		t.Fatal("upstream did not see the half-close as EOF")
	}
	if f, err := readFrame(br); err != nil || string(f.payload) != "after your FIN" {
		t.Fatalf("frame after half-close: %+v, %v", f, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after upstream closed: %v, want EOF", err)
	}
}

// An idle tunnel over TLS is closed at the idle timeout, and a drain ends
// a live one.
func TestUpstreamTLSIdleAndDrain(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	up := serveOn(t, tlsBackend(t, ca, "backend.test", nil), echoHandler(websocket.Upgrader{}))
	cfg := tlsConfigFor(&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}, up)
	cfg.Timeouts.Idle = config.Duration(time.Second)
	g := startGateway(t, cfg)
	c := dial(t, g.Addrs()[0].String(), "/", nil)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil {
		t.Fatal("idle tunnel carried a message")
	}
	waitFor(t, "idle tunnel ended", func() bool { return g.ActiveTunnels() == 0 })

	c = dial(t, g.Addrs()[0].String(), "/", nil)
	waitFor(t, "tunnel registered", func() bool { return g.ActiveTunnels() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Shutdown(ctx) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "closed 1 live tunnels") {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drain did not end the TLS tunnel")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil {
		t.Fatal("tunnel still open after the drain")
	}
}

// TLS failures are failures of the server: the client gets a 502 at once
// (not after a timeout), and the error log says why.
func TestUpstreamTLSFailures(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	other := newTestCA(t, "some other CA")
	gwCert, gwKey, _ := ca.issue(t, "wsgate-client", true)
	up := serveOn(t, tlsBackend(t, ca, "backend.test", nil), echoHandler(websocket.Upgrader{}))
	mtls := serveOn(t, tlsBackend(t, ca, "backend.test", ca.Pool), echoHandler(websocket.Upgrader{}))
	plain := echoUpstream(t, websocket.Upgrader{})
	handshake := "completed the TLS handshake"
	for _, tc := range []struct {
		name, server, log, reason string
		ut                        *config.UpstreamTLS
	}{
		{"wrong CA", up, "certificate signed by unknown authority", handshake,
			&config.UpstreamTLS{Enabled: true, CAFile: other.File, ServerName: "backend.test"}},
		{"system roots", up, "certificate signed by unknown authority", handshake,
			&config.UpstreamTLS{Enabled: true, ServerName: "backend.test"}},
		{"wrong name", up, "certificate is valid for backend.test, not elsewhere.test", handshake,
			&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "elsewhere.test"}},
		// TLS 1.3: the client's handshake is over before the server
		// checks its certificate, so the refusal comes as the answer.
		{"no client certificate", mtls, "certificate required", "failed during the websocket handshake",
			&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}},
		{"not TLS", plain, "does not look like a TLS handshake", handshake,
			&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tlsConfigFor(tc.ut, tc.server)
			// Long timeouts: a failure that waited for one would show.
			cfg.Timeouts.Connect = config.Duration(30 * time.Second)
			cfg.Timeouts.Handshake = config.Duration(30 * time.Second)
			g, errs := startGatewayErrors(t, cfg)
			start := time.Now()
			status, body := dialStatus(t, g.Addrs()[0].String())
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("502 after %v: a TLS failure waited for a timeout", d)
			}
			if status != 502 {
				t.Fatalf("status %d %q, want 502", status, body)
			}
			mustContain(t, body, tc.reason)
			waitForLog(t, errs, tc.log)

			resp, err := httpClient(t).Get("http://" + g.Addrs()[0].String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, resp); resp.StatusCode != 502 {
				t.Fatalf("HTTP: %d %q, want 502", resp.StatusCode, got)
			}
		})
	}
	t.Run("client certificate", func(t *testing.T) {
		g := startGateway(t, tlsConfigFor(&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test",
			CertFile: gwCert, KeyFile: gwKey}, mtls))
		c := dial(t, g.Addrs()[0].String(), "/", nil)
		if err := c.WriteMessage(websocket.TextMessage, []byte("mutual")); err != nil {
			t.Fatal(err)
		}
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "mutual" {
			t.Fatalf("echo over mTLS: %q, %v", msg, err)
		}
	})
}

// A server whose certificate the gateway refuses counts as down: the next
// server is tried, so every client gets through.
func TestUpstreamTLSFailureTriesNextServer(t *testing.T) {
	ca, other := newTestCA(t, "backend CA"), newTestCA(t, "some other CA")
	good := serveOn(t, tlsBackend(t, ca, "backend.test", nil), echoHandler(websocket.Upgrader{}))
	bad := serveOn(t, tlsBackend(t, other, "backend.test", nil), echoHandler(websocket.Upgrader{}))
	cfg := tlsConfigFor(&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}, bad, good)
	cfg.Upstreams["backend"].Balance = "round_robin"
	g, errs := startGatewayErrors(t, cfg)
	for i := range 4 {
		if status, body := dialStatus(t, g.Addrs()[0].String()); status != 101 {
			t.Fatalf("handshake %d: %d %q", i, status, body)
		}
	}
	waitForLog(t, errs, "server "+bad+": tls handshake: tls: failed to verify certificate")
}

// Plain HTTP through an https:// backend: a request with a body, and a
// response streamed chunk by chunk.
func TestUpstreamTLSHTTP(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	up := serveOn(t, tlsBackend(t, ca, "backend.test", nil), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || r.TLS.ServerName != "backend.test" {
			http.Error(w, "not over TLS with SNI backend.test", http.StatusBadRequest)
			return
		}
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "got %d bytes", len(b))
			return
		}
		fl := w.(http.Flusher)
		for i := range 5 {
			fmt.Fprintf(w, "chunk %d\n", i)
			fl.Flush()
			time.Sleep(20 * time.Millisecond)
		}
	}))
	cfg := tlsConfigFor(&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}, up)
	gw := startGateway(t, cfg).Addrs()[0].String()
	cl := httpClient(t)

	resp, err := cl.Post("http://"+gw+"/upload", "application/octet-stream", bytes.NewReader(make([]byte, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 || body != "got 1048576 bytes" {
		t.Fatalf("POST: %d %q", resp.StatusCode, body)
	}
	resp, err = cl.Get("http://" + gw + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("Transfer-Encoding %v, want chunked", resp.TransferEncoding)
	}
	want := "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n"
	if body := readAll(t, resp); resp.StatusCode != 200 || body != want {
		t.Fatalf("stream: %d %q", resp.StatusCode, body)
	}
}

// A request that came over a TLS listener reaches both a plain and a TLS
// upstream: the scheme the upstream client checks is the upstream's.
func TestUpstreamTLSSchemeIsTheUpstreams(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	listenerCert := ca.server(t, "listener", 2, "ws.test")
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "ws.test"}}}
	for name, cfg := range map[string]*config.Config{
		"plain upstream": configFor(serveHTTP(t, hello)),
		"TLS upstream": tlsConfigFor(&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"},
			serveOn(t, tlsBackend(t, ca, "backend.test", nil), hello)),
	} {
		cfg.Listeners[0].TLS = &config.TLS{Certificates: []config.Certificate{listenerCert}}
		resp, err := cl.Get("https://" + startGateway(t, cfg).Addrs()[0].String() + "/")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "hello" {
			t.Errorf("%s: %d %q", name, resp.StatusCode, b)
		}
	}
}

// Health probes speak TLS to a TLS upstream: a server whose health check
// fails is out until its check passes again over TLS.
func TestUpstreamTLSHealthCheck(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	var health atomic.Int32
	health.Store(500)
	up := serveOn(t, tlsBackend(t, ca, "backend.test", nil), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.WriteHeader(int(health.Load()))
			return
		}
		echoHandler(websocket.Upgrader{}).ServeHTTP(w, r)
	}))
	ut := &config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}
	cfg := tlsConfigFor(ut, up)
	cfg.Upstreams["backend"].HealthCheck = &config.HealthCheck{Path: "/health", Interval: config.Duration(50 * time.Millisecond),
		Timeout: config.Duration(time.Second), Healthy: 1, Unhealthy: 1}
	gw := startGateway(t, cfg).Addrs()[0].String()
	waitFor(t, "server taken out", func() bool { s, _ := dialStatus(t, gw); return s == 502 })
	health.Store(200)
	waitFor(t, "server back", func() bool { s, _ := dialStatus(t, gw); return s == 101 })

	// The probes themselves, both kinds, against the right and a wrong CA.
	right, err := newUpstreamTLS("backend", ut)
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := newUpstreamTLS("backend", &config.UpstreamTLS{Enabled: true, CAFile: newTestCA(t, "other").File, ServerName: "backend.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := probeWithin(httpProbe("/health", 200, right), up, 5*time.Second); err != nil {
		t.Errorf("HTTP probe over TLS: %v", err)
	}
	if err := probeWithin(websocketProbe("/ws", right), up, 5*time.Second); err != nil {
		t.Errorf("WebSocket probe over TLS: %v", err)
	}
	if err := probeWithin(httpProbe("/health", 200, wrong), up, 5*time.Second); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("HTTP probe with the wrong CA: %v", err)
	}
	if err := probeWithin(httpProbe("/health", 200, nil), up, 5*time.Second); err == nil {
		t.Error("plain HTTP probe of a TLS server passed")
	}
}

// Files that cannot be loaded stop the gateway at startup, naming the
// upstream.
func TestUpstreamTLSLoadErrors(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	cert, key, _ := ca.issue(t, "wsgate-client", true)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, ut := range []*config.UpstreamTLS{
		{Enabled: true, CAFile: missing},
		{Enabled: true, CAFile: key}, // a key, no certificate
		{Enabled: true, CertFile: cert, KeyFile: missing},
		{Enabled: true, CertFile: ca.File, KeyFile: key}, // not the key's certificate
	} {
		cfg := tlsConfigFor(ut, "127.0.0.1:1")
		cfg.Limits.MaxHeaderBytes = 16384
		if _, err := New(cfg, Options{AccessLog: io.Discard, ErrorLog: io.Discard}); err == nil || !strings.HasPrefix(err.Error(), "upstream backend: tls ") {
			t.Errorf("%+v: %v, want an error naming upstream backend", ut, err)
		}
	}
}

// The tunnel reads a TLS upstream one byte first and then only what needs
// no wait: a record of a single byte must still reach the client at once,
// not when the next record comes.
func TestUpstreamTLSOneByteRecords(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	got := make(chan struct{})
	up := rawUpstreamOn(tlsBackend(t, ca, "backend.test", nil), func(c net.Conn, br *bufio.Reader, req *http.Request) {
		io.WriteString(c, switchingProtocols(req))
		// Each Write on a tls.Conn is one record at least.
		for _, b := range frame(opText, true, false, []byte("xyz")) {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				return
			}
		}
		readFrame(br)
	})
	gw := startGateway(t, tlsConfigFor(&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}, up)).Addrs()[0].String()
	_, br, resp := rawClient(t, gw, nil)
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	want := frame(opText, true, false, []byte("xyz"))
	for i := range want {
		b, err := br.ReadByte()
		if err != nil || b != want[i] {
			t.Fatalf("byte %d: %#x, %v; want %#x", i, b, err, want[i])
		}
		got <- struct{}{}
	}
}

// Kept-alive TLS upstream conns are reused: the check before reuse looks
// at the socket, where TLS 1.3 may leave records the client has not read
// (session tickets), and must not take those for a misbehaving server's
// leftovers and redial every time.
func TestUpstreamTLSKeepAliveReuse(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	var newConns atomic.Int32
	up := serveQueryEcho(t, tlsBackend(t, ca, "backend.test", nil), &newConns)
	cfg := tlsConfigFor(&config.UpstreamTLS{Enabled: true, CAFile: ca.File, ServerName: "backend.test"}, up)
	sequentialGets(t, startGateway(t, cfg).Addrs()[0].String(), 50)
	if n := newConns.Load(); n > 3 {
		t.Errorf("the TLS upstream saw %d connections for 50 sequential requests, want <= 3", n)
	}
}
