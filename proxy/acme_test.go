package proxy

// ACME through the gateway, end to end: pebble (internal/pebbletest) runs
// in the test's process with real validation, and its VA connects to the
// gateway's own listeners, as a CA would connect to ports 80 and 443.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/pebbletest"
)

// acmeDomain resolves to 127.0.0.1 for pebble's VA (pebbletest.StartDNS).
const acmeDomain = "ws." + pebbletest.Zone

// acmeHandshake bounds a first handshake, which waits for the issuance.
const acmeHandshake = 30 * time.Second

// logBuffer is a log the test reads while the gateway and autocert write
// to it; every line also goes to the test's log.
type logBuffer struct {
	t   testing.TB
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.t.Log(strings.TrimSpace(string(p)))
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits (bounded) until the log holds want.
func (b *logBuffer) waitFor(want string) {
	b.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			b.t.Fatalf("no %q in the log; log:\n%s", want, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// acmeConfig is a gateway config with a catch-all route to upstream and
// the given listeners; a first handshake may wait for an issuance.
func acmeConfig(t *testing.T, upstream string, listeners ...config.Listener) *config.Config {
	t.Helper()
	cfg := configFor(upstream)
	cfg.Listeners = listeners
	cfg.Timeouts.Handshake = config.Duration(acmeHandshake)
	cfg.ApplyDefaults()
	return cfg
}

// acmeListener is a TLS listener with acme only: no certificates.
func acmeListener(address string, ca *pebbletest.CA, storageDir string) config.Listener {
	return config.Listener{Address: address, TLS: &config.TLS{ACME: &config.ACME{
		Email:        "ops@" + pebbletest.Zone,
		Domains:      []string{acmeDomain},
		DirectoryURL: ca.DirURL,
		CAFile:       ca.CAFile,
		StorageDir:   storageDir,
	}}}
}

// startStoppable starts a gateway whose Shutdown the test may call early
// (a restart); otherwise it is shut down when the test ends.
func startStoppable(t *testing.T, cfg *config.Config, accessLog, errorLog io.Writer) (*Gateway, func()) {
	t.Helper()
	g, err := New(cfg, Options{AccessLog: accessLog, ErrorLog: errorLog})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := g.Shutdown(ctx); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return g, stop
}

// wssEcho opens wss://name:port/chat through the gateway's TLS listener
// at addr, trusting only roots, checks that a message comes back from the
// upstream, and returns the certificate chain the gateway presented.
func wssEcho(t *testing.T, addr, name string, roots *x509.CertPool) []*x509.Certificate {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	d := websocket.Dialer{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name},
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr) // name resolves here only
		},
		HandshakeTimeout: acmeHandshake,
	}
	c, resp, err := d.Dial("wss://"+net.JoinHostPort(name, port)+"/chat", nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("wss://%s: %v (status %d)", name, err, status)
	}
	defer c.Close()
	msg := "hello over " + name
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
		t.Fatalf("echo through the gateway: %q, %v; want %q", got, err, msg)
	}
	tc, ok := c.UnderlyingConn().(*tls.Conn)
	if !ok {
		t.Fatalf("the client conn is a %T, not TLS", c.UnderlyingConn())
	}
	return tc.ConnectionState().PeerCertificates
}

// tlsRefused checks that a handshake with SNI name (none when empty)
// fails on the gateway's side.
func tlsRefused(t *testing.T, addr, name string) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: name, InsecureSkipVerify: true}) // any failure is the server's
	if err == nil {
		c.Close()
		t.Fatalf("handshake with SNI %q succeeded; want the gateway to refuse it", name)
	}
	if !strings.Contains(err.Error(), "remote error") {
		t.Errorf("handshake with SNI %q: %v; want a TLS alert from the gateway", name, err)
	}
}

// httpGet sends GET path to the plain listener at addr with a Host header,
// without following redirects.
func httpGet(t *testing.T, addr, host, path string) *http.Response {
	t.Helper()
	client := &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestACMEGateway: a gateway whose TLS listener has acme and no
// certificates, and whose plain listener redirects to https. The CA can
// reach the plain listener only (its TLS-ALPN-01 port is closed), so the
// certificate comes through HTTP-01 answered there, before the redirect.
// A wss:// client trusting only the CA's root then talks to a real
// upstream; a restarted gateway serves the stored certificate without an
// order; names not in acme.domains are refused without an order.
func TestACMEGateway(t *testing.T) {
	start := time.Now()
	dnsAddr := pebbletest.StartDNS(t)
	// The CA must know the plain listener's port before the gateway can
	// be configured with the CA's URL: reserve it.
	plainAddr := "127.0.0.1:" + strconv.Itoa(pebbletest.ClosedPort(t))
	ca := pebbletest.Start(t, pebbletest.Options{
		HTTPPort: pebbletest.Port(t, plainAddr),
		TLSPort:  pebbletest.RefusingPort(t),
		DNSAddr:  dnsAddr,
	})
	t.Logf("pebble and DNS up in %s", time.Since(start).Round(time.Millisecond))
	storage := filepath.Join(t.TempDir(), "acme")
	upstream := echoUpstream(t, websocket.Upgrader{})

	accessLog, errLog := &logBuffer{t: t}, &logBuffer{t: t}
	cfg := acmeConfig(t, upstream,
		config.Listener{Address: plainAddr, RedirectHTTPS: true},
		acmeListener("127.0.0.1:0", ca, storage))
	g, stop := startStoppable(t, cfg, accessLog, errLog)
	tlsAddr := g.Addrs()[1].String()
	_, tlsPort, _ := net.SplitHostPort(tlsAddr)
	if n := ca.NewOrders(); n != 0 {
		t.Fatalf("%d orders at startup; want none before a handshake asks", n)
	}

	// The plain listener before any order: the challenge path for our
	// name is the manager's (no such token: 404, not a redirect); other
	// hosts and paths are redirected.
	if resp := httpGet(t, plainAddr, acmeDomain, "/.well-known/acme-challenge/unknown"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("challenge path for %s: %d; want 404 from the ACME manager", acmeDomain, resp.StatusCode)
	}
	if resp := httpGet(t, plainAddr, "other."+pebbletest.Zone, "/.well-known/acme-challenge/x"); resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("challenge path for a name not in domains: %d; want the redirect's 308", resp.StatusCode)
	}

	// (a) The first wss:// handshake obtains the certificate; it chains to
	// pebble's root (the only root the client trusts) and the upstream
	// echoes through the gateway.
	issueStart := time.Now()
	chain := wssEcho(t, tlsAddr, acmeDomain, ca.Roots)
	t.Logf("first wss:// connection, with issuance: %s", time.Since(issueStart).Round(time.Millisecond))
	if err := ca.VerifyChain(chain, acmeDomain); err != nil {
		t.Fatal(err)
	}
	if got := chain[0].DNSNames; len(got) != 1 || got[0] != acmeDomain {
		t.Errorf("certificate names %q; want [%s]", got, acmeDomain)
	}
	serial := chain[0].SerialNumber
	if n := ca.NewOrders(); n != 2 {
		t.Errorf("%d orders; want 2 (TLS-ALPN-01 failed, then HTTP-01)", n)
	}

	// (b) TLS-ALPN-01 could not be validated (the CA's reason is logged),
	// so HTTP-01 was: the VA fetched the token from the plain listener,
	// and that request was neither redirected nor routed (both would be
	// in the access log; a redirect followed to the TLS listener would
	// have waited on this very issuance and failed).
	errLog.waitFor("acme " + acmeDomain + ": certificate obtained from " + ca.DirURL)
	if want := "acme " + acmeDomain + ": the CA could not validate the tls-alpn-01 challenge: unauthorized"; !strings.Contains(errLog.String(), want) {
		t.Errorf("error log lacks %q", want)
	}
	fetch := regexp.MustCompile(`Attempting to validate w/ HTTP: http://` + regexp.QuoteMeta(acmeDomain+":"+strconv.Itoa(pebbletest.Port(t, plainAddr))) +
		`/\.well-known/acme-challenge/([A-Za-z0-9_-]+)`).FindStringSubmatch(ca.Log())
	if fetch == nil {
		t.Fatalf("pebble's VA made no HTTP-01 request to the plain listener %s", plainAddr)
	}
	token := fetch[1] // looked for in the access log once it is flushed
	// Every other request on the plain listener is still redirected.
	resp := httpGet(t, plainAddr, acmeDomain, "/chat?x=1")
	if want := "https://" + acmeDomain + ":" + tlsPort + "/chat?x=1"; resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("GET /chat on the plain listener: %d Location %q; want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	// (d) Names not in acme.domains, and no name at all: this listener has
	// no certificates of its own, so the handshake fails, and nothing is
	// ordered for them.
	tlsRefused(t, tlsAddr, "other."+pebbletest.Zone)
	tlsRefused(t, tlsAddr, "")
	if n := ca.NewOrders(); n != 2 {
		t.Errorf("%d orders after refused names; want still 2", n)
	}
	if strings.Contains(errLog.String(), "acme other.") {
		t.Errorf("the ACME manager acted on a name not in domains:\n%s", errLog.String())
	}

	// (c) A restart: a second gateway on the same storage_dir serves the
	// stored certificate with no new order.
	stop() // the access log is flushed
	if strings.Contains(accessLog.String(), token) {
		t.Errorf("the CA's HTTP-01 request for token %s was redirected or routed:\n%s", token, accessLog.String())
	}
	if !strings.Contains(accessLog.String(), "GET - /chat?x=1 upstream=- status=308") {
		t.Errorf("the access log lacks the redirect of GET /chat:\n%s", accessLog.String())
	}
	// The refused handshakes are in the error log (above), not in the
	// access log as requests that never were.
	if strings.Contains(accessLog.String(), "status=400") {
		t.Errorf("a refused TLS handshake is in the access log as a 400:\n%s", accessLog.String())
	}
	errLog2 := &logBuffer{t: t}
	g2, _ := startStoppable(t, acmeConfig(t, upstream, acmeListener("127.0.0.1:0", ca, storage)), io.Discard, errLog2)
	restarted := wssEcho(t, g2.Addrs()[0].String(), acmeDomain, ca.Roots)
	if err := ca.VerifyChain(restarted, acmeDomain); err != nil {
		t.Fatal(err)
	}
	if restarted[0].SerialNumber.Cmp(serial) != 0 {
		t.Errorf("after the restart: serial %x; want the stored %x", restarted[0].SerialNumber, serial)
	}
	if n := ca.NewOrders(); n != 2 {
		t.Errorf("%d orders after the restart; want still 2", n)
	}
	errLog2.waitFor("acme " + acmeDomain + ": using the stored certificate (serial " + fmt.Sprintf("%x", serial))
	if strings.Contains(errLog2.String(), "ordering") {
		t.Errorf("the restarted gateway ordered:\n%s", errLog2.String())
	}
	t.Logf("whole test: %s", time.Since(start).Round(time.Millisecond))
}

// TestACMEGatewayTLSALPN01: the CA reaches the gateway's TLS listener only
// (its HTTP-01 port is closed). Its TLS-ALPN-01 hello, which offers only
// acme-tls/1, is answered by the listener with the challenge certificate:
// the listener offers that protocol and asks the manager first.
func TestACMEGatewayTLSALPN01(t *testing.T) {
	dnsAddr := pebbletest.StartDNS(t)
	tlsAddr := "127.0.0.1:" + strconv.Itoa(pebbletest.ClosedPort(t))
	ca := pebbletest.Start(t, pebbletest.Options{
		HTTPPort: pebbletest.RefusingPort(t),
		TLSPort:  pebbletest.Port(t, tlsAddr),
		DNSAddr:  dnsAddr,
	})
	accessLog, errLog := &logBuffer{t: t}, &logBuffer{t: t}
	cfg := acmeConfig(t, echoUpstream(t, websocket.Upgrader{}), acmeListener(tlsAddr, ca, t.TempDir()))
	_, stop := startStoppable(t, cfg, accessLog, errLog)

	start := time.Now()
	chain := wssEcho(t, tlsAddr, acmeDomain, ca.Roots)
	t.Logf("first wss:// connection, with issuance: %s", time.Since(start).Round(time.Millisecond))
	if err := ca.VerifyChain(chain, acmeDomain); err != nil {
		t.Fatal(err)
	}
	if n := ca.NewOrders(); n != 1 {
		t.Errorf("%d orders; want 1 (TLS-ALPN-01 passed the first time)", n)
	}
	errLog.waitFor("acme " + acmeDomain + ": certificate obtained from " + ca.DirURL)
	if strings.Contains(errLog.String(), "could not validate") {
		t.Errorf("a challenge failed:\n%s", errLog.String())
	}
	// The CA's challenge connection is no request: only the client's
	// tunnel is in the access log, and the error log has nothing on it.
	stop()
	if lines := strings.Split(strings.TrimSpace(accessLog.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], " status=101 ") {
		t.Errorf("access log: %q; want the one tunnel", lines)
	}
	if strings.Contains(errLog.String(), "error when serving") {
		t.Errorf("the challenge connection is in the error log:\n%s", errLog.String())
	}
}
