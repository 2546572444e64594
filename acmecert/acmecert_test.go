package acmecert

// The tests run Let's Encrypt's pebble in this process (its ca, db, va and
// wfe packages behind an httptest TLS server on 127.0.0.1) rather than as a
// built binary: no `go build` step (tens of seconds on a cold CI cache), one
// fresh CA per test with its own challenge ports and certificate lifetime,
// and a counting handler in front of its WFE without a proxy process. The
// VA does real validation: a small DNS server below answers A 127.0.0.1
// for *.wsgate.test, and pebble connects to the test's TLS listener
// (TLS-ALPN-01) or to a fasthttp server calling ServeHTTPChallenge (HTTP-01).

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
	"github.com/valyala/fasthttp"

	"github.com/wsgate/wsgate/config"
)

const (
	testDomain = "ws.wsgate.test"
	// issueTimeout bounds one handshake that waits for an issuance.
	issueTimeout = time.Minute
)

// syncBuffer is an io.Writer safe for the goroutines of autocert, pebble
// and the servers, which may still write after a test's last check.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitLog waits until the log holds want.
func waitLog(t *testing.T, b *syncBuffer, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within %s; log:\n%s", want, timeout, b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type pebbleOptions struct {
	httpPort, tlsPort int    // where the VA connects for HTTP-01 and TLS-ALPN-01
	dnsAddr           string // the VA's resolver
	alwaysValid       bool   // PEBBLE_VA_ALWAYS_VALID: no validation at all
	validity          uint64 // certificate lifetime in seconds; 0 = pebble's 90 days
}

type pebble struct {
	dirURL    string
	caFile    string         // PEM of the directory's own HTTPS certificate
	roots     *x509.CertPool // pebble's root, which issued certificates chain to
	newOrders atomic.Int32
	srv       *httptest.Server
	log       syncBuffer
}

// startPebble runs an ACME CA on 127.0.0.1 until the test ends.
func startPebble(t *testing.T, o pebbleOptions) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random 0-5 s sleep per validation
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no random badNonce
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order validates anew
	if o.alwaysValid {
		t.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
	}
	p := &pebble{}
	logger := log.New(&p.log, "pebble ", log.Lmicroseconds)
	store := db.NewMemoryStore()
	profiles := map[string]ca.Profile{"default": {Description: "test", ValidityPeriod: o.validity}}
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	validator := va.New(logger, o.httpPort, o.tlsPort, false, o.dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	acmeAPI, management := front.Handler(), front.ManagementHandler()
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, wfe.RootCertPath):
			management.ServeHTTP(w, r)
		case r.Method == http.MethodPost && r.URL.Path == "/order-plz": // pebble's newOrder
			p.newOrders.Add(1)
			acmeAPI.ServeHTTP(w, r)
		default:
			acmeAPI.ServeHTTP(w, r)
		}
	}))
	p.srv.Config.ErrorLog = log.New(&p.log, "pebble http ", 0)
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble's log:\n%s", p.log.String())
		}
	})
	p.dirURL = p.srv.URL + wfe.DirectoryPath
	p.caFile = filepath.Join(t.TempDir(), "acme-server-root.pem")
	if err := os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}

	// The root certificates chain to, from pebble's management endpoint,
	// as one would fetch it from a pebble process.
	client := p.srv.Client()
	client.Timeout = 10 * time.Second
	resp, err := client.Get(p.srv.URL + wfe.RootCertPath + "0")
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble's root: status %d, %v", resp.StatusCode, err)
	}
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble's root is not PEM: %q", rootPEM)
	}
	return p
}

// startDNS answers A 127.0.0.1 for every name under wsgate.test (and no
// AAAA), over TCP as pebble's VA asks, on 127.0.0.1.
func startDNS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Net: "tcp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if !strings.HasSuffix(q.Name, ".wsgate.test.") {
				m.Rcode = dns.RcodeNameError
				continue
			}
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("DNS server did not start")
	}
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// closedPort returns a 127.0.0.1 port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
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
	own := selfSigned(t, "fallback.wsgate.test")
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

// verifyChain checks that chain is for name and chains to roots.
func verifyChain(t *testing.T, chain []*x509.Certificate, name string, roots *x509.CertPool) {
	t.Helper()
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
		t.Fatalf("certificate for %s does not verify against pebble's root: %v", name, err)
	}
}

func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
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
	dnsAddr := startDNS(t)
	l := startTLSListener(t)
	addr := l.ln.Addr().String()
	p := startPebble(t, pebbleOptions{httpPort: closedPort(t), tlsPort: portOf(t, addr), dnsAddr: dnsAddr})
	cfg := &config.ACME{
		Email:        "ops@wsgate.test",
		DirectoryURL: p.dirURL,
		CAFile:       p.caFile,
		Domains:      []string{testDomain},
		StorageDir:   filepath.Join(t.TempDir(), "acme"),
	}
	var logs syncBuffer
	m := newManager(t, cfg, &logs)
	l.mgr.Store(m)
	if n := p.newOrders.Load(); n != 0 {
		t.Fatalf("New ordered %d certificates; want none before a handshake", n)
	}

	start := time.Now()
	chain := handshake(t, addr, testDomain, p.roots)
	t.Logf("first handshake, with issuance: %s", time.Since(start).Round(time.Millisecond))
	verifyChain(t, chain, testDomain, p.roots)
	serial := chain[0].SerialNumber
	if n := p.newOrders.Load(); n != 1 {
		t.Fatalf("%d orders for the first handshake; want 1", n)
	}
	if l.challenges.Load() == 0 {
		t.Error("pebble's VA made no TLS-ALPN-01 handshake with the listener")
	}
	waitLog(t, &logs, "wsgate: ", time.Second)
	for _, want := range []string{
		"acme " + testDomain + ": ordering a certificate from " + p.dirURL,
		"acme " + testDomain + ": certificate obtained from " + p.dirURL,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	// The same name again: the held certificate, no order.
	if again := handshake(t, addr, strings.ToUpper(testDomain), p.roots); again[0].SerialNumber.Cmp(serial) != 0 {
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
	if n := p.newOrders.Load(); n != 1 {
		t.Fatalf("%d orders after the other names; want 1", n)
	}

	// storage_dir: 0700, the account key and the certificate in 0600
	// files; the challenge certificate is removed once used.
	checkStorage(t, cfg.StorageDir, []string{"acme_account+key", testDomain})

	// Restart: a new Manager on the same storage_dir serves the stored
	// certificate without an order.
	m.Close()
	var logs2 syncBuffer
	m2 := newManager(t, cfg, &logs2)
	l.mgr.Store(m2)
	restarted := handshake(t, addr, testDomain, p.roots)
	verifyChain(t, restarted, testDomain, p.roots)
	if restarted[0].SerialNumber.Cmp(serial) != 0 {
		t.Errorf("after the restart: serial %x; want the stored %x", restarted[0].SerialNumber, serial)
	}
	if n := p.newOrders.Load(); n != 1 {
		t.Errorf("%d orders after the restart; want still 1", n)
	}
	waitLog(t, &logs2, "acme "+testDomain+": using the stored certificate", time.Second)
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
	dnsAddr := startDNS(t)
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
	p := startPebble(t, pebbleOptions{httpPort: portOf(t, plain.Addr().String()), tlsPort: closedPort(t), dnsAddr: dnsAddr})
	cfg := &config.ACME{DirectoryURL: p.dirURL, CAFile: p.caFile, Domains: []string{testDomain}, StorageDir: t.TempDir()}
	var logs syncBuffer
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
	chain := handshake(t, l.ln.Addr().String(), testDomain, p.roots)
	t.Logf("handshake with issuance (TLS-ALPN-01 failed, HTTP-01 passed): %s", time.Since(start).Round(time.Millisecond))
	verifyChain(t, chain, testDomain, p.roots)
	if n := answered.Load(); n == 0 {
		t.Error("the CA got no HTTP-01 answer from ServeHTTPChallenge")
	}
	if n := p.newOrders.Load(); n != 2 {
		t.Errorf("%d orders; want 2 (TLS-ALPN-01, then HTTP-01)", n)
	}
	waitLog(t, &logs, "acme "+testDomain+": certificate obtained", time.Second)
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
	p := startPebble(t, pebbleOptions{alwaysValid: true, validity: 6})
	cfg := &config.ACME{DirectoryURL: p.dirURL, CAFile: p.caFile, Domains: []string{testDomain}, StorageDir: t.TempDir()}
	var logs syncBuffer
	m := newManager(t, cfg, &logs)
	l.mgr.Store(m)
	addr := l.ln.Addr().String()

	first := handshake(t, addr, testDomain, p.roots)
	verifyChain(t, first, testDomain, p.roots)
	waitLog(t, &logs, "acme "+testDomain+": renewing the certificate valid until", 15*time.Second)
	waitLog(t, &logs, "acme "+testDomain+": certificate renewed", 15*time.Second)
	renewed := handshake(t, addr, testDomain, p.roots)
	verifyChain(t, renewed, testDomain, p.roots)
	if renewed[0].SerialNumber.Cmp(first[0].SerialNumber) == 0 {
		t.Errorf("after the renewal the same certificate %x is served", first[0].SerialNumber)
	}
	if n := p.newOrders.Load(); n < 2 {
		t.Errorf("%d orders; want at least 2", n)
	}

	// The CA goes away: the next renewal fails, and the log says why.
	p.srv.Close()
	waitLog(t, &logs, "connection refused", 15*time.Second)
}

// TestIssuanceFailure has both challenges fail (nothing reachable on the
// VA's ports): the handshake fails, the log gives each challenge's reason
// from the CA and the error once, and handshakes during autocert's one
// minute back-off fail at once without an order or a repeated log line.
func TestIssuanceFailure(t *testing.T) {
	dnsAddr := startDNS(t)
	l := startTLSListener(t)
	p := startPebble(t, pebbleOptions{httpPort: closedPort(t), tlsPort: closedPort(t), dnsAddr: dnsAddr})
	cfg := &config.ACME{DirectoryURL: p.dirURL, CAFile: p.caFile, Domains: []string{testDomain}, StorageDir: t.TempDir()}
	var logs syncBuffer
	m := newManager(t, cfg, &logs)
	l.mgr.Store(m)

	hello := func() error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: issueTimeout}, "tcp", l.ln.Addr().String(),
			&tls.Config{ServerName: testDomain, RootCAs: p.roots})
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
		waitLog(t, &logs, want, time.Second)
	}
	orders := p.newOrders.Load()
	start := time.Now()
	if err := hello(); err == nil {
		t.Fatal("second handshake succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second handshake took %s; want a fast failure", d)
	}
	if n := p.newOrders.Load(); n != orders {
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
	var out syncBuffer
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
