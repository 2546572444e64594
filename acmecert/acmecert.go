// Package acmecert obtains, stores and renews the certificates of one TLS
// listener from an ACME CA (Let's Encrypt by default), as configured by a
// listener's tls.acme block.
//
// It is a thin layer over golang.org/x/crypto/acme/autocert: autocert does
// the ACME protocol, answers the TLS-ALPN-01 and HTTP-01 challenges, keeps
// the account key and certificates in storage_dir (autocert.DirCache) and
// renews each certificate in the background (by default when a third of its
// lifetime is left, at most 30 days before expiry). This package adds what
// the gateway needs around it: only the configured names are served (other
// names get (nil, nil) so the listener falls back to its own certificates),
// the CA's own HTTPS certificate can be checked against a private root
// (ca_file), HTTP-01 is answered from a fasthttp server, and every issuance,
// renewal and failure is written to the error log with the CA's reason.
//
// Nothing is requested from the CA until a TLS handshake asks for one of the
// names; after a restart the stored certificate is served without an order.
package acmecert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/wsgate/wsgate/config"
)

// challengePrefix is the path of HTTP-01 challenge answers (RFC 8555 8.3).
const challengePrefix = "/.well-known/acme-challenge/"

// After a failed issuance, handshakes for that name fail at once for
// firstBackoff, then twice as long after each further failure, up to
// maxBackoff. autocert alone would try again one minute after every
// failure, three orders each time, which spends the CA's rate limits
// (Let's Encrypt: 5 failed validations per name and hour).
const (
	firstBackoff = time.Minute
	maxBackoff   = time.Hour
)

// errClosed is what the ACME client meets after Close.
var errClosed = errors.New("acmecert: manager closed")

// Manager obtains and renews the certificates of one listener's acme block.
// Its methods are safe for concurrent use.
type Manager struct {
	ac      *autocert.Manager
	domains map[string]bool
	http    http.Handler // autocert's HTTP-01 answers
	log     *eventLog
}

// New prepares a manager for cfg; nothing is requested from the CA until a
// handshake needs a certificate. It creates storage_dir (mode 0700) if it
// is missing and reads ca_file, so a wrong path fails at startup rather
// than at the first handshake. errorLog receives one line per issuance,
// renewal and failure; nil means stderr.
func New(cfg *config.ACME, errorLog io.Writer) (*Manager, error) {
	if cfg == nil || len(cfg.Domains) == 0 {
		return nil, errors.New("acmecert: no domains")
	}
	if errorLog == nil {
		errorLog = os.Stderr
	}
	dirURL := cfg.DirectoryURL
	if dirURL == "" {
		dirURL = config.DefaultACMEDirectory
	}
	storage := cfg.StorageDir
	if storage == "" {
		storage = config.DefaultACMEStorage
	}
	if err := os.MkdirAll(storage, 0o700); err != nil {
		return nil, fmt.Errorf("acmecert: storage_dir: %w", err)
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("acmecert: ca_file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acmecert: ca_file %q holds no PEM certificate", cfg.CAFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}

	m := &Manager{
		domains: make(map[string]bool, len(cfg.Domains)),
		log:     newEventLog(errorLog, dirURL, storage),
	}
	for _, d := range cfg.Domains {
		m.domains[normalize(d)] = true
	}
	m.ac = &autocert.Manager{
		// Ordering a certificate means accepting the CA's subscriber
		// agreement, as with certbot --agree-tos or Caddy.
		Prompt:     autocert.AcceptTOS,
		Cache:      &loggingCache{DirCache: autocert.DirCache(storage), log: m.log},
		HostPolicy: m.hostPolicy,
		Email:      cfg.Email,
		Client: &acme.Client{
			DirectoryURL: dirURL,
			UserAgent:    "wsgate",
			HTTPClient: &http.Client{
				Transport: &loggingTransport{next: transport, log: m.log},
				Timeout:   time.Minute,
			},
		},
	}
	// HTTPHandler also turns HTTP-01 on: autocert tries TLS-ALPN-01 first,
	// then HTTP-01 on a new order if the CA could not validate that.
	m.http = m.ac.HTTPHandler(http.NotFoundHandler())
	return m, nil
}

// GetCertificate answers a ClientHello for one of the domains (obtaining the
// certificate on first use, which holds that handshake until the CA has
// issued it; from storage after a restart) and the CA's TLS-ALPN-01
// challenge hellos. For any other name, and for a hello without SNI, it
// returns (nil, nil) so the caller can fall back to its own certificates.
// When no certificate can be had for one of the domains it logs the error
// and returns it; further handshakes for that name then fail at once for a
// back-off (1 minute, doubling up to 1 hour) instead of ordering again.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := normalize(hello.ServerName)
	if isChallengeHello(hello) {
		// Only the CA sends a hello that offers acme-tls/1 alone; it must
		// get the challenge certificate or nothing.
		if !m.domains[name] {
			return nil, fmt.Errorf("acmecert: no TLS-ALPN-01 challenge for %q", hello.ServerName)
		}
		return m.ac.GetCertificate(hello)
	}
	if !m.domains[name] {
		return nil, nil
	}
	if err := m.log.backingOff(name); err != nil {
		return nil, err
	}
	cert, err := m.ac.GetCertificate(hello)
	if err != nil {
		m.log.failure(name, err)
		return nil, err
	}
	return cert, nil
}

// NextProtos is what the TLS listener must add to its ALPN protocols for
// the TLS-ALPN-01 challenge ("acme-tls/1"). A hello offering only that
// protocol is the CA's and is answered by GetCertificate.
func (m *Manager) NextProtos() []string { return []string{acme.ALPNProto} }

// ServeHTTPChallenge answers GET /.well-known/acme-challenge/TOKEN for one
// of the domains on a plain listener (the CA connects to port 80) and
// reports whether it answered. Other paths and other hosts are left to the
// caller, so a backend can still answer challenges for its own names.
func (m *Manager) ServeHTTPChallenge(ctx *fasthttp.RequestCtx) bool {
	if !ctx.IsGet() && !ctx.IsHead() {
		return false
	}
	if !bytes.HasPrefix(ctx.Path(), []byte(challengePrefix)) {
		return false
	}
	if !m.domains[normalize(hostOnly(string(ctx.Host())))] {
		return false
	}
	// The request autocert sees is built here, not with fasthttpadaptor:
	// the adaptor makes the fasthttp RequestCtx the request's context, and
	// autocert derives a timeout context from it, whose watcher goroutine
	// reads the server's shutdown state unsynchronized (a data race with
	// Server.Shutdown in fasthttp v1.74.0). An answer is a token lookup.
	req, err := http.NewRequestWithContext(context.Background(), string(ctx.Method()), "http://"+string(ctx.Host())+string(ctx.Path()), nil)
	if err != nil {
		ctx.Error("bad challenge request", fasthttp.StatusBadRequest)
		return true
	}
	w := &challengeWriter{ctx: ctx, header: http.Header{}}
	m.http.ServeHTTP(w, req)
	return true
}

// challengeWriter is the http.ResponseWriter of one HTTP-01 answer,
// written into the fasthttp response.
type challengeWriter struct {
	ctx         *fasthttp.RequestCtx
	header      http.Header
	wroteHeader bool
}

func (w *challengeWriter) Header() http.Header { return w.header }

func (w *challengeWriter) WriteHeader(status int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	for k, vs := range w.header {
		for _, v := range vs {
			w.ctx.Response.Header.Add(k, v)
		}
	}
	w.ctx.SetStatusCode(status)
}

func (w *challengeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.ctx.Write(b)
}

// Close stops the manager's traffic to the CA and its logging, for a
// configuration reload that drops or changes the acme block. Certificates
// already held are still served. autocert's renewal timers cannot be
// stopped from outside; after Close a renewal that comes due fails at once
// without contacting the CA, so a reload that keeps the same acme block
// should keep its Manager rather than make a new one.
func (m *Manager) Close() { m.log.closed.Store(true) }

// hostPolicy lets autocert order certificates for the configured names
// only (a hello with any SNI would otherwise spend the CA's rate limits).
// It also sees the Host header of HTTP-01 requests, port included.
func (m *Manager) hostPolicy(_ context.Context, host string) error {
	if m.domains[normalize(hostOnly(host))] {
		return nil
	}
	return fmt.Errorf("acmecert: %q is not in acme.domains", host)
}

// isChallengeHello reports whether hello is a TLS-ALPN-01 validation
// (RFC 8737: the only protocol offered is acme-tls/1).
func isChallengeHello(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto
}

func normalize(name string) string {
	return strings.TrimSuffix(strings.ToLower(name), ".")
}

func hostOnly(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return hostport
}

// eventLog writes the manager's events to the error log, one line each,
// as "acme NAME: ..." (or "acme: ..." when no name is known).
type eventLog struct {
	out     *log.Logger
	dirURL  string
	storage string
	closed  atomic.Bool

	mu     sync.Mutex
	certs  map[string]heldCert // the certificate held per name
	failed map[string]failure  // last failed issuance per name
	seen   map[string]struct{} // invalid authorizations already logged
}

func newEventLog(w io.Writer, dirURL, storage string) *eventLog {
	return &eventLog{
		out:     log.New(w, "wsgate: ", log.LstdFlags),
		dirURL:  dirURL,
		storage: storage,
		certs:   make(map[string]heldCert),
		failed:  make(map[string]failure),
		seen:    make(map[string]struct{}),
	}
}

func (l *eventLog) printf(format string, args ...any) {
	if !l.closed.Load() {
		l.out.Printf(format, args...)
	}
}

type failure struct {
	err  error
	at   time.Time
	wait time.Duration
}

// failure records and logs that no certificate could be had for name,
// and starts or lengthens its back-off. Handshakes that waited on the
// same attempt fail together and are logged once.
func (l *eventLog) failure(name string, err error) {
	now := time.Now()
	l.mu.Lock()
	f, seen := l.failed[name]
	if seen && now.Before(f.at.Add(f.wait)) {
		l.mu.Unlock()
		return
	}
	wait := firstBackoff
	if seen {
		wait = min(2*f.wait, maxBackoff)
	}
	l.failed[name] = failure{err: err, at: now, wait: wait}
	l.mu.Unlock()
	l.printf("acme %s: no certificate: %v; next attempt on a handshake after %s", name, err, wait)
}

// backingOff returns the last failure for name while its back-off runs.
func (l *eventLog) backingOff(name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, seen := l.failed[name]
	if !seen || !time.Now().Before(f.at.Add(f.wait)) {
		return nil
	}
	return fmt.Errorf("acmecert: no certificate for %s since %s: %w", name, f.at.UTC().Format(time.RFC3339), f.err)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
