package acmecert

// The tests run Let's Encrypt's pebble in this process (internal/pebbletest)
// with real validation: pebble's VA connects to the test's TLS listener
// (TLS-ALPN-01) or to a fasthttp server calling ServeHTTPChallenge
// (HTTP-01), at 127.0.0.1 as pebbletest's DNS server answers for
// *.wsgate.test.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/pebbletest"
	"github.com/wsgate/wsgate/internal/syncbuf"
	"github.com/wsgate/wsgate/internal/testpki"
)

const (
	testDomain = "ws.wsgate.test"
	// issueTimeout bounds one handshake that waits for an issuance.
	issueTimeout = time.Minute
)

// waitLog waits until the log holds want.
func waitLog(t *testing.T, b *syncbuf.Buffer, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within %s; log:\n%s", want, timeout, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tlsListener is a TLS listener on 127.0.0.1 wired as the gateway's will
// be: the manager first, then the listener's own certificate (here one for
// fallback.wsgate.test), ALPN http/1.1 plus the manager's protocols.
type tlsListener struct {
	ln         net.Listener
	mgr        atomic.Pointer[Manager] // swapped on a "restart"
	challenges atomic.Int32            // TLS-ALPN-01 hellos answered with a certificate
}

func startTLSListener(t *testing.T) *tlsListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &tlsListener{ln: ln}
	own := testpki.Pair(t, testpki.Options{Names: []string{"fallback.wsgate.test"}}).Pair
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if m := l.mgr.Load(); m != nil {
				cert, err := m.GetCertificate(hello)
				if cert != nil && isChallengeHello(hello) {
					l.challenges.Add(1)
				}
				if cert != nil || err != nil {
					return cert, err
				}
			}
			return &own, nil
		},
		NextProtos: append([]string{"http/1.1"}, (&Manager{}).NextProtos()...),
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(issueTimeout))
				tc := tls.Server(c, cfg)
				if tc.Handshake() == nil {
					_, _ = io.Copy(io.Discard, tc) // until the client closes
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return l
}

// handshake connects to addr with SNI name, trusting roots, and returns the
// chain the server sent.
func handshake(t *testing.T, addr, name string, roots *x509.CertPool) []*x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: issueTimeout}, "tcp", addr,
		&tls.Config{ServerName: name, RootCAs: roots, InsecureSkipVerify: roots == nil})
	if err != nil {
		t.Fatalf("TLS handshake for %s: %v", name, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates
}

// verifyChain checks that chain is for name and chains to p's root.
func verifyChain(t *testing.T, p *pebbletest.CA, chain []*x509.Certificate, name string) {
	t.Helper()
	if err := p.VerifyChain(chain, name); err != nil {
		t.Fatal(err)
	}
}

func newManager(t *testing.T, cfg *config.ACME, logs io.Writer) *Manager {
	t.Helper()
	m, err := New(cfg, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// TestTLSALPN01 obtains a certificate on the first handshake, with pebble
// validating the TLS-ALPN-01 challenge on the listener itself; serves it
// again without an order, leaves other names to the listener, and after a
// restart serves the stored certificate without an order.
func TestTLSALPN01(t *testing.T) {
	dnsAddr := pebbletest.StartDNS(t)
	l := startTLSListener(t)
	addr := l.ln.Addr().String()
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: pebbletest.RefusingPort(t), TLSPort: pebbletest.Port(t, addr), DNSAddr: dnsAddr})
	cfg := &config.ACME{
		Email:        "ops@wsgate.test",
		DirectoryURL: p.DirURL,
		CAFile:       p.CAFile,
		Domains:      []string{testDomain},
		StorageDir:   filepath.Join(t.TempDir(), "acme"),
	}
	var logs syncbuf.Buffer
	m := newManager(t, cfg, &logs)
	l.mgr.Store(m)
	if n := p.NewOrders(); n != 0 {
		t.Fatalf("New ordered %d certificates; want none before a handshake", n)
	}

	start := time.Now()
	chain := handshake(t, addr, testDomain, p.Roots)
	t.Logf("first handshake, with issuance: %s", time.Since(start).Round(time.Millisecond))
	verifyChain(t, p, chain, testDomain)
	serial := chain[0].SerialNumber
	if n := p.NewOrders(); n != 1 {
		t.Fatalf("%d orders for the first handshake; want 1", n)
	}
	if l.challenges.Load() == 0 {
		t.Error("pebble's VA made no TLS-ALPN-01 handshake with the listener")
	}
	waitLog(t, &logs, "wsgate: ", 15*time.Second)
	for _, want := range []string{
		"acme " + testDomain + ": ordering a certificate from " + p.DirURL,
		"acme " + testDomain + ": certificate obtained from " + p.DirURL,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	// The same name again: the held certificate, no order.
	if again := handshake(t, addr, strings.ToUpper(testDomain), p.Roots); again[0].SerialNumber.Cmp(serial) != 0 {
		t.Errorf("second handshake got serial %x; want %x", again[0].SerialNumber, serial)
	}

	// Other names are the listener's: (nil, nil), then its own certificate.
	for _, name := range []string{"other.wsgate.test", ""} {
		cert, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: name})
		if cert != nil || err != nil {
			t.Errorf("GetCertificate(%q) = %v, %v; want nil, nil", name, cert, err)
		}
	}
	if got := handshake(t, addr, "other.wsgate.test", nil); got[0].Subject.CommonName != "fallback.wsgate.test" {
		t.Errorf("other name got %q; want the listener's fallback.wsgate.test", got[0].Subject.CommonName)
	}
	// A challenge hello for a name that is not ours gets an error, never a
	// certificate.
	if cert, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.wsgate.test", SupportedProtos: []string{"acme-tls/1"}}); cert != nil || err == nil {
		t.Errorf("challenge hello for another name = %v, %v; want an error", cert, err)
	}
	if n := p.NewOrders(); n != 1 {
		t.Fatalf("%d orders after the other names; want 1", n)
	}

	// storage_dir: 0700, the account key and the certificate in 0600
	// files; the challenge certificate is removed once used.
	checkStorage(t, cfg.StorageDir, []string{"acme_account+key", testDomain})

	// Restart: a new Manager on the same storage_dir serves the stored
	// certificate without an order.
	m.Close()
	var logs2 syncbuf.Buffer
	m2 := newManager(t, cfg, &logs2)
	l.mgr.Store(m2)
	restarted := handshake(t, addr, testDomain, p.Roots)
	verifyChain(t, p, restarted, testDomain)
	if restarted[0].SerialNumber.Cmp(serial) != 0 {
		t.Errorf("after the restart: serial %x; want the stored %x", restarted[0].SerialNumber, serial)
	}
	if n := p.NewOrders(); n != 1 {
		t.Errorf("%d orders after the restart; want still 1", n)
	}
	waitLog(t, &logs2, "acme "+testDomain+": using the stored certificate", 15*time.Second)
	if strings.Contains(logs2.String(), "ordering") {
		t.Errorf("the restarted manager ordered:\n%s", logs2.String())
	}
}

// checkStorage waits (bounded) until dir holds exactly want, then checks
// the modes.
func checkStorage(t *testing.T, dir string, want []string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o700 {
		t.Errorf("storage_dir mode %o; want 700", mode)
	}
	deadline := time.Now().Add(5 * time.Second)
	var names []string
	for {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		names = names[:0]
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if strings.Join(names, " ") == strings.Join(want, " ") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("storage_dir holds %q; want %q", names, want)
	}
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s mode %o; want 600", name, mode)
		}
	}
}

// TestHTTP01 has TLS-ALPN-01 fail (pebble's VA finds nothing on its TLS
// port, as when :443 is not reachable from the CA) so that autocert falls
// back to HTTP-01, which pebble validates through ServeHTTPChallenge on a
// fasthttp server. The failure is logged with the CA's reason.
func TestHTTP01(t *testing.T) {
	dnsAddr := pebbletest.StartDNS(t)
	var mgr atomic.Pointer[Manager]
	var answered, passed atomic.Int32
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if m := mgr.Load(); m != nil && m.ServeHTTPChallenge(ctx) {
				answered.Add(1)
				return
			}
			passed.Add(1)
			ctx.SetStatusCode(fasthttp.StatusTeapot)
			ctx.SetBodyString("route")
		},
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(plain) }()
	t.Cleanup(func() { _ = srv.Shutdown() })

	l := startTLSListener(t)
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: pebbletest.Port(t, plain.Addr().String()), TLSPort: pebbletest.RefusingPort(t), DNSAddr: dnsAddr})
	cfg := &config.ACME{DirectoryURL: p.DirURL, CAFile: p.CAFile, Domains: []string{testDomain}, StorageDir: t.TempDir()}
	var logs syncbuf.Buffer
	m := newManager(t, cfg, &logs)
	mgr.Store(m)
	l.mgr.Store(m)

	// What ServeHTTPChallenge answers and what it leaves to the routes.
	client := &http.Client{Timeout: 10 * time.Second}
	for _, c := range []struct {
		method, host, path string
		status             int
	}{
		{"GET", testDomain, "/.well-known/acme-challenge/unknown", http.StatusNotFound},   // ours, no such token
		{"GET", testDomain + ":80", "/.well-known/acme-challenge/x", http.StatusNotFound}, // port stripped
		{"GET", "other.wsgate.test", "/.well-known/acme-challenge/x", http.StatusTeapot},  // another host: the routes'
		{"GET", testDomain, "/chat", http.StatusTeapot},                                   // another path
		{"POST", testDomain, "/.well-known/acme-challenge/x", http.StatusTeapot},          // another method
	} {
		req, _ := http.NewRequest(c.method, "http://"+plain.Addr().String()+c.path, nil)
		req.Host = c.host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s %s%s: status %d; want %d", c.method, c.host, c.path, resp.StatusCode, c.status)
		}
	}
	answered.Store(0)

	start := time.Now()
	chain := handshake(t, l.ln.Addr().String(), testDomain, p.Roots)
	t.Logf("handshake with issuance (TLS-ALPN-01 failed, HTTP-01 passed): %s", time.Since(start).Round(time.Millisecond))
	verifyChain(t, p, chain, testDomain)
	if n := answered.Load(); n == 0 {
		t.Error("the CA got no HTTP-01 answer from ServeHTTPChallenge")
	}
	if n := p.NewOrders(); n != 2 {
		t.Errorf("%d orders; want 2 (TLS-ALPN-01, then HTTP-01)", n)
	}
	waitLog(t, &logs, "acme "+testDomain+": certificate obtained", 15*time.Second)
	if want := "acme " + testDomain + ": the CA could not validate the tls-alpn-01 challenge: unauthorized: Failed to connect"; !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, logs.String())
	}
}

// TestRenewal has pebble issue certificates that live 6 s: autocert renews
// them in the background (a third of the lifetime before expiry), the
// renewed certificate is served, and when the CA is gone the failure is
// logged with its reason.
func TestRenewal(t *testing.T) {
	l := startTLSListener(t)
	p := pebbletest.Start(t, pebbletest.Options{AlwaysValid: true, Validity: 6})
	cfg := &config.ACME{DirectoryURL: p.DirURL, CAFile: p.CAFile, Domains: []string{testDomain}, StorageDir: t.TempDir()}
	var logs syncbuf.Buffer
	m := newManager(t, cfg, &logs)
	l.mgr.Store(m)
	addr := l.ln.Addr().String()

	first := handshake(t, addr, testDomain, p.Roots)
	verifyChain(t, p, first, testDomain)
	waitLog(t, &logs, "acme "+testDomain+": renewing the certificate valid until", 15*time.Second)
	waitLog(t, &logs, "acme "+testDomain+": certificate renewed", 15*time.Second)
	renewed := handshake(t, addr, testDomain, p.Roots)
	verifyChain(t, p, renewed, testDomain)
	if renewed[0].SerialNumber.Cmp(first[0].SerialNumber) == 0 {
		t.Errorf("after the renewal the same certificate %x is served", first[0].SerialNumber)
	}
	if n := p.NewOrders(); n < 2 {
		t.Errorf("%d orders; want at least 2", n)
	}

	// The CA goes away: the next renewal fails, and the log says why.
	p.Close()
	waitLog(t, &logs, "connection refused", 15*time.Second)
}

// TestIssuanceFailure has both challenges fail (nothing reachable on the
// VA's ports): the handshake fails, the log gives each challenge's reason
// from the CA and the error once, and handshakes during autocert's one
// minute back-off fail at once without an order or a repeated log line.
func TestIssuanceFailure(t *testing.T) {
	dnsAddr := pebbletest.StartDNS(t)
	l := startTLSListener(t)
	p := pebbletest.Start(t, pebbletest.Options{HTTPPort: pebbletest.RefusingPort(t), TLSPort: pebbletest.RefusingPort(t), DNSAddr: dnsAddr})
	cfg := &config.ACME{DirectoryURL: p.DirURL, CAFile: p.CAFile, Domains: []string{testDomain}, StorageDir: t.TempDir()}
	var logs syncbuf.Buffer
	m := newManager(t, cfg, &logs)
	l.mgr.Store(m)

	hello := func() error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: issueTimeout}, "tcp", l.ln.Addr().String(),
			&tls.Config{ServerName: testDomain, RootCAs: p.Roots})
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := hello(); err == nil {
		t.Fatal("handshake succeeded with no challenge reachable")
	}
	for _, want := range []string{
		"the CA could not validate the tls-alpn-01 challenge: unauthorized: Failed to connect",
		"the CA could not validate the http-01 challenge: connection: ",
		"acme " + testDomain + ": no certificate: ",
		"next attempt on a handshake after 1m0s",
	} {
		waitLog(t, &logs, want, 15*time.Second)
	}
	orders := p.NewOrders()
	start := time.Now()
	if err := hello(); err == nil {
		t.Fatal("second handshake succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second handshake took %s; want a fast failure", d)
	}
	if n := p.NewOrders(); n != orders {
		t.Errorf("%d orders after the second handshake; want %d", n, orders)
	}
	if n := strings.Count(logs.String(), "no certificate:"); n != 1 {
		t.Errorf("the failure is logged %d times; want once:\n%s", n, logs.String())
	}
	t.Logf("log:\n%s", logs.String())
}

// TestBackoff: after a failure a name waits 1 minute, then twice as long
// after each further failure, up to an hour; a certificate clears it.
func TestBackoff(t *testing.T) {
	var out syncbuf.Buffer
	l := newEventLog(&out, "https://ca.test/dir", t.TempDir())
	fail := errors.New("boom")
	for _, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute,
		16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour} {
		l.failure(testDomain, fail)
		l.failure(testDomain, fail) // a handshake that waited on the same attempt
		if err := l.backingOff(testDomain); !errors.Is(err, fail) {
			t.Fatalf("backingOff = %v; want the failure", err)
		}
		l.mu.Lock()
		f := l.failed[testDomain]
		f.at = f.at.Add(-f.wait) // the back-off has run out
		l.failed[testDomain] = f
		l.mu.Unlock()
		if f.wait != want {
			t.Fatalf("back-off %s; want %s", f.wait, want)
		}
		if err := l.backingOff(testDomain); err != nil {
			t.Fatalf("backingOff after the wait = %v; want nil", err)
		}
	}
	if n := strings.Count(out.String(), "no certificate: boom"); n != 8 {
		t.Errorf("%d failure lines; want 8:\n%s", n, out.String())
	}
	l.held(testDomain, &x509.Certificate{SerialNumber: big.NewInt(7), NotAfter: time.Now().Add(time.Hour)})
	l.failure(testDomain, fail)
	if l.failed[testDomain].wait != time.Minute {
		t.Errorf("after a certificate the back-off starts at %s; want 1m", l.failed[testDomain].wait)
	}
}
