package tlsterm

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// plainHTTPAnswer is sent to a client that spoke plain HTTP to a TLS port,
// as nginx ("The plain HTTP request was sent to HTTPS port") and Go's
// net/http do, instead of a bare close the user cannot explain.
const plainHTTPAnswer = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" +
	"This port speaks TLS: use https:// or wss://.\n"

// errPlainHTTP is a handshake that began with an HTTP request.
var errPlainHTTP = errors.New("plain HTTP request on a TLS port")

// Listener wraps inner so every accepted connection speaks TLS with t's
// configuration. The handshake runs on the first Read or Write, bounded by
// the handshake timeout; a client that sends plain HTTP gets a 400 saying
// so, and any handshake failure closes only that connection.
func (t *Terminator) Listener(inner net.Listener) net.Listener {
	return &listener{Listener: inner, t: t}
}

type listener struct {
	net.Listener
	t *Terminator
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.t.Server(c), nil
}

// Server returns c as the server side of a TLS connection with t's
// configuration; the handshake runs as it does on Listener's conns.
func (t *Terminator) Server(c net.Conn) *Conn {
	return &Conn{Conn: tls.Server(c, t.tlsConfig), t: t}
}

// Conn is a server-side TLS connection whose handshake is bounded and
// reported. It embeds *tls.Conn, so fasthttp sees its ConnectionState and
// a tunnel can CloseWrite it.
type Conn struct {
	*tls.Conn
	t    *Terminator
	once sync.Once
	err  error
	// failed is err once the handshake failed, for the deadline setters,
	// which a tunnel may call from another goroutine.
	failed   atomic.Pointer[HandshakeError]
	detached atomic.Bool
	// eofNext: the last Read returned bytes that crypto/tls delivered
	// together with the end of the stream; the next Read returns io.EOF.
	eofNext bool
	// readEOF: a Read returned io.EOF (see ReadEOF).
	readEOF atomic.Bool
}

// Detach hands the *tls.Conn over to the caller, who closes it from now
// on: Close no longer does. A hijacked conn's new owner (a WebSocket
// tunnel) detaches it, so the HTTP server's cleanup after the hijack
// leaves it open.
func (c *Conn) Detach() { c.detached.Store(true) }

// Close closes the connection unless it was detached.
func (c *Conn) Close() error {
	if c.detached.Load() {
		return nil
	}
	return c.Conn.Close()
}

// Read completes the handshake first. The end of the stream (the
// client's close_notify, or its TCP FIN) is always a Read of its own:
// crypto/tls returns the last bytes together with io.EOF when the
// close_notify came with them, and a reader that stops at those bytes
// (a complete request body) must not be told that the stream ended.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	if c.eofNext {
		c.readEOF.Store(true)
		return 0, io.EOF
	}
	n, err := c.Conn.Read(p)
	if err == io.EOF {
		if n > 0 {
			c.eofNext = true
			return n, nil
		}
		c.readEOF.Store(true)
	}
	return n, err
}

// ReadEOF reports whether a Read returned io.EOF: the client ended its
// side of the stream. An HTTP server that reads a request body with a
// reader that takes the end of the stream at a chunk boundary for the
// body's end can tell a body cut short that way.
func (c *Conn) ReadEOF() bool { return c.readEOF.Load() }

// Write completes the handshake first.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// SetDeadline sets the conn's deadlines, or returns the handshake's
// failure. An HTTP server sets a read deadline first thing after the
// handshake, so the failure ends the conn there, whether or not crypto/tls
// closed it (it does when the timeout ends the handshake).
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.failed.Load(); err != nil {
		return err
	}
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline is as SetDeadline, for reads.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if err := c.failed.Load(); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline is as SetDeadline, for writes.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if err := c.failed.Load(); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// Handshake runs the handshake once, bounded by the handshake timeout.
func (c *Conn) Handshake() error { return c.handshake() }

func (c *Conn) handshake() error {
	c.once.Do(func() {
		timeout := c.t.opts.HandshakeTimeout
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		err := c.Conn.HandshakeContext(ctx)
		if err == nil {
			return
		}
		var rh tls.RecordHeaderError
		var netErr net.Error
		switch {
		case errors.As(err, &rh) && rh.Conn != nil && looksLikeHTTP(rh.RecordHeader[:]):
			rh.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			rh.Conn.Write([]byte(plainHTTPAnswer))
			err = errPlainHTTP
		case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout():
			// The context's end, or a read deadline the server set to
			// the same time: one message for both.
			err = fmt.Errorf("not done within %v", timeout)
		}
		// The failure reaches the server's error log through the call
		// that comes next (fasthttp logs it with both addresses).
		failure := &HandshakeError{Err: err}
		c.err = failure
		c.failed.Store(failure)
	})
	return c.err
}

// looksLikeHTTP reports whether the first bytes of a connection are the
// start of an HTTP/1 request line.
func looksLikeHTTP(b []byte) bool {
	for _, m := range []string{"GET ", "HEAD", "POST", "PUT ", "DELE", "OPTI", "PATC", "CONN", "TRAC"} {
		if bytes.HasPrefix(b, []byte(m)) {
			return true
		}
	}
	return false
}

// HandshakeError is a TLS handshake that failed: no request was read from
// the connection, so there is nothing to answer or to log as a request.
type HandshakeError struct{ Err error }

func (e *HandshakeError) Error() string { return "tls handshake: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *HandshakeError) Unwrap() error { return e.Err }
