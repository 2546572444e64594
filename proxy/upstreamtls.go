package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/config"
)

// upstreamTLS is how the gateway speaks TLS to the servers of one upstream
// (wss:// and https:// backends). It is built once, at startup, so a file
// that cannot be loaded stops the gateway instead of failing every request.
type upstreamTLS struct {
	base *tls.Config
}

// newUpstreamTLS loads an upstream's tls block; nil means plain TCP.
func newUpstreamTLS(name string, c *config.UpstreamTLS) (*upstreamTLS, error) {
	if c == nil || !c.Enabled {
		return nil, nil
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The gateway speaks HTTP/1.1 to upstreams (WebSocket needs it);
		// a server that offers h2 must not pick it.
		NextProtos:         []string{"http/1.1"},
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify,
		// Resumed sessions skip the certificate exchange on the next
		// connection to a server, as nginx's proxy_ssl_session_reuse does
		// by default.
		ClientSessionCache: tls.NewLRUClientSessionCache(0),
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: tls ca_file: %w", name, err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream %s: tls ca_file %s holds no PEM certificate", name, c.CAFile)
		}
		tc.RootCAs = roots
	}
	// Without ca_file RootCAs stays nil: the system's roots.
	if c.CertFile != "" || c.KeyFile != "" {
		pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: tls cert_file %s, key_file %s: %w", name, c.CertFile, c.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return &upstreamTLS{base: tc}, nil
}

// configFor returns the config for a connection to address: the name sent
// in SNI and checked against the certificate is server_name, else the host
// of the address. (Go sends no SNI for an IP address and checks the
// certificate's IP addresses instead.)
func (u *upstreamTLS) configFor(address string) *tls.Config {
	if u.base.ServerName != "" {
		return u.base
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	// A clone per connection: its cost is small beside a handshake's, and
	// a cache by name would grow with every address discovery ever saw.
	tc := u.base.Clone()
	tc.ServerName = host
	return tc
}

// tlsHandshakeError is a server that accepted the TCP connection but
// failed the TLS handshake (unknown CA, wrong name, no client
// certificate): for balancing it is a server that could not be reached.
type tlsHandshakeError struct{ err error }

func (e *tlsHandshakeError) Error() string { return "tls handshake: " + e.err.Error() }
func (e *tlsHandshakeError) Unwrap() error { return e.err }

// dialServer connects to a server of an upstream within ctx, over TLS
// when u is not nil. The TCP connect and the TLS handshake share ctx's
// deadline, so a server that accepts and then says nothing fails like one
// that does not answer the SYN.
func dialServer(ctx context.Context, address string, u *upstreamTLS) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", address)
	if err != nil || u == nil {
		return conn, err
	}
	tc := tls.Client(newPollConn(conn.(*net.TCPConn)), u.configFor(address))
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, &tlsHandshakeError{err}
	}
	return tc, nil
}

// dialTimeout is dialServer bounded by the connect timeout alone.
func dialTimeout(address string, u *upstreamTLS, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return dialServer(ctx, address, u)
}

// unreachable is the client's reason when no server of pool could be
// connected to; a TLS failure is named, as it is a configuration matter
// (CA, server name, client certificate) more often than an outage.
func unreachable(pool string, err error) string {
	if errors.As(err, new(*tlsHandshakeError)) {
		return "no upstream server of " + pool + " completed the TLS handshake"
	}
	return "no upstream server of " + pool + " could be reached"
}

// pollConn is the TCP conn under an upstream TLS conn. Its reads can be
// told not to wait, which lets a tunnel ask crypto/tls for what it has
// buffered or the socket holds without parking a relay buffer inside a
// TLS read (see tunnel.tlsWaitAndRelay).
type pollConn struct {
	*net.TCPConn
	raw syscall.RawConn
	// noWait is set and read only by the goroutine that reads the TLS
	// conn: crypto/tls calls Read from within its own Read.
	noWait bool
}

func newPollConn(c *net.TCPConn) *pollConn {
	raw, err := c.SyscallConn()
	if err != nil {
		// Only a closed conn has no RawConn; its reads fail anyway.
		return &pollConn{TCPConn: c}
	}
	return &pollConn{TCPConn: c, raw: raw}
}

// errWouldBlock is a read that found nothing without waiting. crypto/tls
// keeps a conn usable after a read error only if the error is a temporary
// net.Error; bytes of a partial record stay buffered for the next read.
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "read would block" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

// noWaitReader is a conn under a TLS conn whose reads can be told not to
// wait: a pollConn, or a clientConn built on one.
type noWaitReader interface{ setNoWait(bool) }

func (c *pollConn) setNoWait(on bool) { c.noWait = on }

func (c *pollConn) Read(p []byte) (int, error) {
	if !c.noWait || c.raw == nil {
		return c.TCPConn.Read(p)
	}
	var n int
	var err error
	// RawConn.Read checks the read deadline first, then runs the callback
	// once: returning true even on EAGAIN means it never parks.
	if rerr := c.raw.Read(func(fd uintptr) bool {
		for {
			n, err = syscall.Read(int(fd), p)
			if err != syscall.EINTR {
				return true
			}
		}
	}); rerr != nil {
		return 0, rerr
	}
	switch {
	case err == syscall.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", err)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}
