package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
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
	tc := tls.Client(newTCPConn(conn.(*net.TCPConn)), u.configFor(address))
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

// tcpConn is the TCP conn under a TLS session of the gateway's: an
// upstream's (dialServer) or a client's on a TLS listener (under a
// clientConn). When a tunnel starts, the relay takes the socket and the
// session (relay.Endpoint): crypto/tls cannot be given another conn, so
// this one is rerouted instead, and from then on sends every call the
// session makes to the relay's transport.
type tcpConn struct {
	*net.TCPConn
	// relayed, once set (reroute), takes every call: the TCP conn is
	// closed then, its socket the relay's. It is set by the goroutine
	// that hands the tunnel to the relay, before the relay's loop first
	// uses the session, and read by that loop alone afterwards.
	relayed net.Conn
}

func newTCPConn(c *net.TCPConn) *tcpConn { return &tcpConn{TCPConn: c} }

// reroute is relay.Endpoint.Reroute.
func (c *tcpConn) reroute(to net.Conn) { c.relayed = to }

func (c *tcpConn) Read(p []byte) (int, error) {
	if c.relayed != nil {
		return c.relayed.Read(p)
	}
	return c.TCPConn.Read(p)
}

func (c *tcpConn) Write(p []byte) (int, error) {
	if c.relayed != nil {
		return c.relayed.Write(p)
	}
	return c.TCPConn.Write(p)
}

func (c *tcpConn) Close() error {
	if c.relayed != nil {
		return c.relayed.Close()
	}
	return c.TCPConn.Close()
}

func (c *tcpConn) SetDeadline(t time.Time) error {
	if c.relayed != nil {
		return c.relayed.SetDeadline(t)
	}
	return c.TCPConn.SetDeadline(t)
}

func (c *tcpConn) SetReadDeadline(t time.Time) error {
	if c.relayed != nil {
		return c.relayed.SetReadDeadline(t)
	}
	return c.TCPConn.SetReadDeadline(t)
}

func (c *tcpConn) SetWriteDeadline(t time.Time) error {
	if c.relayed != nil {
		return c.relayed.SetWriteDeadline(t)
	}
	return c.TCPConn.SetWriteDeadline(t)
}
