// Package tlsterm terminates TLS on wsgate's listeners: certificates chosen
// by the client's SNI name, replaced when their files change without
// touching live connections, client certificates (mutual TLS), and a place
// for certificates managed elsewhere (ACME).
package tlsterm

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/config"
)

// CertSource supplies certificates it manages itself, such as an ACME
// client. GetCertificate returns (nil, nil) for names it does not manage.
type CertSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// NextProtos are ALPN protocols the source answers (acme-tls/1).
	NextProtos() []string
}

// Options are what a Terminator needs beyond its configuration.
type Options struct {
	// Managed, when set, is asked first for every handshake.
	Managed CertSource
	// Logf receives reloads and refused reloads.
	Logf func(format string, args ...any)
	// HandshakeTimeout bounds a client's TLS handshake; 0 means 10s.
	HandshakeTimeout time.Duration
}

// Terminator holds one TLS listener's configuration and certificates.
type Terminator struct {
	certs     []config.Certificate
	opts      Options
	tlsConfig *tls.Config
	current   atomic.Pointer[certSet]

	reloadMu sync.Mutex
	seen     [][sha256.Size]byte // file digests at the last load attempt
}

// New loads cfg's certificates and client CA. Defaults must have been
// applied to cfg (config.Load does).
func New(cfg *config.TLS, opts Options) (*Terminator, error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	t := &Terminator{certs: cfg.Certificates, opts: opts}
	t.seen = fileDigests(t.certs)
	set, err := loadCertSet(t.certs, time.Now())
	if err != nil {
		return nil, err
	}
	t.current.Store(set)

	minVersion, ok := config.TLSVersions[cfg.MinVersion]
	if !ok {
		minVersion = tls.VersionTLS12
	}
	// One tls.Config for the listener's life: certificates are swapped
	// under it (GetCertificate), so its session ticket keys, and with them
	// resumption, survive a certificate reload.
	t.tlsConfig = &tls.Config{
		MinVersion:     minVersion,
		GetCertificate: t.getCertificate,
		// fasthttp speaks HTTP/1.1 only. A client offering "h2, http/1.1"
		// gets http/1.1; one offering only h2 is refused by crypto/tls,
		// which is right: it could not talk to us anyway.
		NextProtos: []string{"http/1.1"},
	}
	if opts.Managed != nil {
		t.tlsConfig.NextProtos = append(t.tlsConfig.NextProtos, opts.Managed.NextProtos()...)
	}
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client_ca_file %s holds no PEM certificate", cfg.ClientCAFile)
		}
		t.tlsConfig.ClientCAs = pool
		t.tlsConfig.ClientAuth = tls.RequireAndVerifyClientCert
		if cfg.ClientAuth == config.ClientAuthVerifyIfGiven {
			t.tlsConfig.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	return t, nil
}

// TLSConfig is the listener's configuration, for tls.NewListener or
// Listener.
func (t *Terminator) TLSConfig() *tls.Config { return t.tlsConfig }

// getCertificate picks the certificate for one handshake.
func (t *Terminator) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m := t.opts.Managed; m != nil {
		if c, err := m.GetCertificate(hello); c != nil || err != nil {
			return c, err
		}
	}
	if c := t.current.Load().lookup(hello.ServerName); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
}

// Reload reads the certificate files again (SIGHUP). New handshakes use
// the new certificates; connections already up keep theirs. A file that
// does not load (unreadable, not PEM, a key of another certificate,
// expired or not valid yet: what -check refuses) is refused with a log line, and the certificates in use stay.
func (t *Terminator) Reload() error {
	t.reloadMu.Lock()
	defer t.reloadMu.Unlock()
	return t.reload(fileDigests(t.certs))
}

func (t *Terminator) reload(digests [][sha256.Size]byte) error {
	t.seen = digests
	set, err := loadCertSet(t.certs, time.Now())
	if err != nil {
		t.opts.Logf("tls: certificate reload refused, the certificates in use stay: %v", err)
		return err
	}
	t.current.Store(set)
	t.opts.Logf("tls: certificates reloaded (%d)", len(t.certs))
	return nil
}

// reloadIfChanged reloads when a file reads differently from the last
// attempt; a broken file is thus reported once, not on every poll.
func (t *Terminator) reloadIfChanged() {
	t.reloadMu.Lock()
	defer t.reloadMu.Unlock()
	if digests := fileDigests(t.certs); !slices.Equal(digests, t.seen) {
		t.reload(digests)
	}
}

// Watch polls the certificate files every interval until ctx ends, and
// reloads when one changed. Polling (files are a few KiB) works wherever
// the files live, including mounted Kubernetes secrets whose updates are
// symlink swaps that inotify watches miss.
func (t *Terminator) Watch(ctx context.Context, interval time.Duration) {
	if len(t.certs) == 0 {
		return
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.reloadIfChanged()
		}
	}
}

// ClientSubject returns the subject of a verified client certificate, in
// RFC 2253 form ("CN=alice,O=Example"), as nginx's $ssl_client_s_dn does;
// "" when the client sent none.
func ClientSubject(state *tls.ConnectionState) string {
	if state == nil || len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return ""
	}
	return state.VerifiedChains[0][0].Subject.String()
}
