// Package pebbletest runs Let's Encrypt's pebble ACME CA inside a test's
// process, for the tests of the packages that obtain certificates over ACME
// (acmecert, and proxy through its TLS listeners). It is imported by tests
// only, so pebble is never linked into the wsgate binary.
//
// pebble runs from its packages (ca, db, va, wfe) behind an httptest TLS
// server on 127.0.0.1 rather than as a built binary: no `go build` step
// (tens of seconds on a cold CI cache), one fresh CA per test with its own
// challenge ports and certificate lifetime, and a counting handler in front
// of its WFE without a proxy process. Its VA does real validation: StartDNS
// answers A 127.0.0.1 for every name under Zone, and the VA connects to
// 127.0.0.1 on the ports given in Options for TLS-ALPN-01 and HTTP-01.
package pebbletest

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
	"github.com/wsgate/wsgate/internal/syncbuf"
)

// Zone is the DNS zone StartDNS answers: every name under it is 127.0.0.1.
const Zone = "wsgate.test"

// Options choose where the CA's VA connects and what it issues.
type Options struct {
	// HTTPPort and TLSPort are the 127.0.0.1 ports the VA connects to for
	// HTTP-01 and TLS-ALPN-01 (the CA's view of ports 80 and 443). A port
	// from ClosedPort makes that challenge fail.
	HTTPPort, TLSPort int
	// DNSAddr is the VA's resolver, from StartDNS.
	DNSAddr string
	// AlwaysValid skips validation altogether (PEBBLE_VA_ALWAYS_VALID).
	AlwaysValid bool
	// Validity is the lifetime of issued certificates in seconds; 0 means
	// pebble's default (90 days).
	Validity uint64
}

// CA is a running pebble.
type CA struct {
	// DirURL is the ACME directory URL (acme.directory_url).
	DirURL string
	// CAFile is a PEM file of the directory's own HTTPS certificate
	// (acme.ca_file).
	CAFile string
	// Roots holds pebble's root, which issued certificates chain to.
	Roots *x509.CertPool

	srv       *httptest.Server
	newOrders atomic.Int32
	log       syncbuf.Buffer
}

// Start runs a CA on 127.0.0.1 until the test ends. It sets environment
// variables for pebble (with t.Setenv), so the test must not be parallel.
// If the test fails, pebble's log is written to the test's log.
func Start(t testing.TB, o Options) *CA {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random 0-5 s sleep per validation
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no random badNonce
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order validates anew
	if o.AlwaysValid {
		t.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
	}
	c := &CA{}
	logger := log.New(&c.log, "pebble ", log.Lmicroseconds)
	store := db.NewMemoryStore()
	profiles := map[string]ca.Profile{"default": {Description: "test", ValidityPeriod: o.Validity}}
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	validator := va.New(logger, o.HTTPPort, o.TLSPort, false, o.DNSAddr, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	acmeAPI, management := front.Handler(), front.ManagementHandler()
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, wfe.RootCertPath):
			management.ServeHTTP(w, r)
		case r.Method == http.MethodPost && r.URL.Path == "/order-plz": // pebble's newOrder
			c.newOrders.Add(1)
			acmeAPI.ServeHTTP(w, r)
		default:
			acmeAPI.ServeHTTP(w, r)
		}
	}))
	c.srv.Config.ErrorLog = log.New(&c.log, "pebble http ", 0)
	c.srv.StartTLS()
	t.Cleanup(c.srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble's log:\n%s", c.log.String())
		}
	})
	c.DirURL = c.srv.URL + wfe.DirectoryPath
	c.CAFile = filepath.Join(t.TempDir(), "acme-server-root.pem")
	if err := os.WriteFile(c.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}

	// The root certificates chain to, from pebble's management endpoint,
	// as one would fetch it from a pebble process.
	client := c.srv.Client()
	client.Timeout = 10 * time.Second
	resp, err := client.Get(c.srv.URL + wfe.RootCertPath + "0")
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble's root: status %d, %v", resp.StatusCode, err)
	}
	c.Roots = x509.NewCertPool()
	if !c.Roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble's root is not PEM: %q", rootPEM)
	}
	return c
}

// NewOrders is how many newOrder requests the CA has received.
func (c *CA) NewOrders() int { return int(c.newOrders.Load()) }

// Log is what pebble has logged so far (each validation attempt among
// other things).
func (c *CA) Log() string { return c.log.String() }

// Close stops the CA before the test ends, as when the CA goes away;
// later requests to DirURL are refused.
func (c *CA) Close() { c.srv.Close() }

// VerifyChain checks that chain (leaf first, as a TLS server sends it) is
// valid for name and chains to the CA's root.
func (c *CA) VerifyChain(chain []*x509.Certificate, name string) error {
	if len(chain) == 0 {
		return fmt.Errorf("no certificate for %s", name)
	}
	inter := x509.NewCertPool()
	for _, cert := range chain[1:] {
		inter.AddCert(cert)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: c.Roots, Intermediates: inter}); err != nil {
		return fmt.Errorf("certificate for %s does not verify against pebble's root: %w", name, err)
	}
	return nil
}

// StartDNS answers A 127.0.0.1 for every name under Zone (and no AAAA),
// over TCP as pebble's VA asks, on 127.0.0.1 until the test ends. It
// returns the server's address, for Options.DNSAddr.
func StartDNS(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Net: "tcp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if !strings.HasSuffix(q.Name, "."+Zone+".") {
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

// ClosedPort returns a 127.0.0.1 port nothing listens on (it was bound and
// released), for a listener that must be on a port known before the CA
// starts. For a port that must stay refused, use RefusingPort: a released
// port can be the next one the system hands to a listener on port 0.
func ClosedPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// RefusingPort returns a 127.0.0.1 port that refuses connections until
// the test ends, for a challenge that must fail: a socket is bound to it
// without listening, so connecting gets a reset and no listener on port
// 0 can be given it.
func RefusingPort(t testing.TB) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}

// Port returns the port of a host:port address.
func Port(t testing.TB, addr string) int {
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
