package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/httpbody"
	"github.com/wsgate/wsgate/tlsterm"
	"golang.org/x/sys/unix"
)

// upstreamTransport is how every HostClient of the gateway exchanges a
// request and its response with an upstream server. fasthttp's default
// transport keeps a connection whatever the server sent around its
// answer: a body on a HEAD or a 204, bytes past Content-Length, a 101 or
// an unsolicited 408. The next client's request then reads those bytes as
// its answer, and the client after it gets the one before's (a response
// desync). It also ends a chunked body cut at a chunk boundary with a
// last chunk of its own, passing a truncated body on as complete.
//
// This transport follows each body's framing (package httpbody) in both
// directions, keeps a connection only when the answer ended exactly where
// its framing said, and before reusing a pooled connection checks that
// nothing arrived on it while it was idle (nginx's keepalive module closes
// such a connection when it becomes readable).
type upstreamTransport struct{}

// errInterim is a 1xx answer other than 100 Continue and 103 Early Hints:
// a 101 to a request that asked for no upgrade, or an interim code this
// gateway cannot relay. The connection is closed; the client gets a 502.
type errInterim struct{ status int }

func (e errInterim) Error() string {
	if e.status == fasthttp.StatusSwitchingProtocols {
		return "upstream switched protocols (101) on a request that was not an upgrade"
	}
	return "upstream sent an unexpected interim response " + strconv.Itoa(e.status)
}

// maxInterim bounds the 100 and 103 answers skipped before the final one.
const maxInterim = 8

// clientBodyError is a failure to read the client's request body: the
// client's fault, never the upstream's, and not to be retried.
type clientBodyError struct {
	err  error
	sent int64 // body bytes forwarded before it
}

func (e *clientBodyError) Error() string {
	return fmt.Sprintf("request body: %v after %d bytes", e.err, e.sent)
}
func (e *clientBodyError) Unwrap() error { return e.err }

// clientReadEOFKey is the request user value that tells, while the
// client's body streams, whether the client's conn was read to its end
// (a readEOFer: the plain conn's *clientReadEOF, or tlsReadEOF): a
// chunked body's reader in fasthttp reports the client's FIN at a chunk
// boundary as the body's end, and only the conn knows it was a FIN.
type clientReadEOFKey struct{}

// readEOFer reports whether a client conn's reads met the end of the
// stream.
type readEOFer interface{ readEOF() bool }

// tlsReadEOF is a TLS client conn as a readEOFer.
type tlsReadEOF struct{ c *tlsterm.Conn }

func (t tlsReadEOF) readEOF() bool { return t.c.ReadEOF() }

// RoundTrip implements fasthttp.RoundTripper.
func (upstreamTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (retry bool, err error) {
	cc, err := hc.AcquireConn(0, req.ConnectionClose())
	// A pooled conn (one released before: LastUseTime is set) is used only
	// if nothing came on it while idle; each stale one is closed, and the
	// next is tried, a fresh dial last.
	for err == nil && !cc.LastUseTime().IsZero() && !quiet(cc.Conn()) {
		hc.CloseConn(cc)
		cc, err = hc.AcquireConn(0, req.ConnectionClose())
	}
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	resp.ParseNetConn(conn)

	bw := hc.AcquireWriter(conn)
	err = writeRequest(bw, req)
	hc.ReleaseWriter(bw)
	if err != nil {
		hc.CloseConn(cc)
		var cbe *clientBodyError
		return !errors.As(err, &cbe), err
	}

	resp.Header.DisableNormalizing()
	br := hc.AcquireReader(conn)
	if err := readFinalHead(br, &resp.Header); err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		var ie errInterim
		return !errors.As(err, &ie), err
	}
	keep := !req.ConnectionClose() && !resp.ConnectionClose()
	release := func(reuse bool) {
		hc.ReleaseReader(br)
		if reuse {
			hc.ReleaseConn(cc)
		} else {
			hc.CloseConn(cc)
		}
	}
	status := resp.Header.StatusCode()
	size := resp.Header.ContentLength()
	if req.Header.IsHead() || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified || size == 0 {
		// No body (RFC 9112 section 6.3). Bytes already behind the head
		// are a body the server should not have sent: the conn goes.
		resp.SkipBody = true
		release(keep && br.Buffered() == 0)
		return false, nil
	}
	s := upstreamStreams.Get().(*upstreamStream)
	s.release, s.br, s.keep, s.eof = release, br, keep, false
	switch {
	case size > 0:
		s.framing = framingFixed
		s.fixed.Reset(br, int64(size))
	case size == -1:
		s.framing = framingChunked
		s.chunked.Reset(br)
	default:
		// Neither length nor chunked: the body ends with the connection,
		// which therefore cannot be told from a cut and is never reused.
		s.framing, s.keep = framingUntilClose, false
	}
	resp.SetBodyStream(s, size)
	return false, nil
}

// readFinalHead reads the upstream's final response head, skipping 100
// Continue and 103 Early Hints.
func readFinalHead(br *bufio.Reader, h *fasthttp.ResponseHeader) error {
	for range maxInterim {
		if err := h.Read(br); err != nil {
			return err
		}
		switch status := h.StatusCode(); {
		case status == fasthttp.StatusContinue || status == fasthttp.StatusEarlyHints:
			h.Reset()
			h.DisableNormalizing()
		case status < 200:
			return errInterim{status}
		default:
			return nil
		}
	}
	return fmt.Errorf("upstream sent more than %d interim responses", maxInterim)
}

// quiet reports whether an idle pooled conn is as its last exchange left
// it: nothing to read and not closed. Bytes waiting on it are an answer
// to no request (a late body, an unsolicited 408) and a FIN means the
// server is gone; either way the conn must not carry a request. One
// non-blocking MSG_PEEK, run without waiting or deadline checks.
func quiet(c net.Conn) bool {
	rc := rawConnOf(c)
	if rc == nil {
		return true
	}
	idle := false
	rc.Control(func(fd uintptr) {
		var b [1]byte
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		idle = err == unix.EAGAIN
	})
	return idle
}

// rawConnOf finds the socket under an upstream conn: through idleConn,
// TLS and pollConn wrappers.
func rawConnOf(c net.Conn) syscall.RawConn {
	for c != nil {
		switch v := c.(type) {
		case tlsIdleConn:
			c = v.Conn
		case *idleConn:
			c = v.Conn
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = v.NetConn()
		case syscall.Conn:
			rc, err := v.SyscallConn()
			if err != nil {
				return nil
			}
			return rc
		default:
			return nil
		}
	}
	return nil
}

// How an upstream response body ends.
const (
	framingFixed      = iota // after Content-Length bytes
	framingChunked           // after the last chunk and the trailer section
	framingUntilClose        // with the connection
)

// upstreamStream is an upstream response body read by its framing. Its
// Close hands the conn back to the pool only if the body was read to its
// end, that end was where the framing said, and nothing followed it.
// Streams are pooled: with the readers inside, a response costs no
// allocation beyond the release closure.
type upstreamStream struct {
	framing int
	fixed   httpbody.Fixed
	chunked httpbody.Chunked
	br      *bufio.Reader
	keep    bool // the headers allow reuse and the framing can tell the end
	eof     bool
	release func(reuse bool)
}

var upstreamStreams = sync.Pool{New: func() any { return new(upstreamStream) }}

// Read reads the body. A body cut short or malformed fails with an
// *upstreamBodyError.
func (s *upstreamStream) Read(p []byte) (n int, err error) {
	switch s.framing {
	case framingFixed:
		n, err = s.fixed.Read(p)
	case framingChunked:
		n, err = s.chunked.Read(p)
	default:
		n, err = s.br.Read(p)
	}
	if err == io.EOF {
		s.eof = true
	} else if err != nil {
		err = &upstreamBodyError{err}
	}
	return n, err
}

// complete reports whether the body ended where its framing said.
func (s *upstreamStream) complete() bool {
	switch s.framing {
	case framingFixed:
		return s.fixed.Complete()
	case framingChunked:
		return s.chunked.Complete()
	}
	return s.eof
}

// Close releases the conn (back to the pool, or closed) and the stream.
// fasthttp closes a response's body stream once, then forgets it.
func (s *upstreamStream) Close() error {
	s.release(s.keep && s.eof && s.complete() && s.br.Buffered() == 0)
	*s = upstreamStream{}
	upstreamStreams.Put(s)
	return nil
}

// upstreamBodyError is an upstream response body that failed after its
// head was relayed: cut short, malformed, or timed out.
type upstreamBodyError struct{ err error }

func (e *upstreamBodyError) Error() string { return "response body: " + e.err.Error() }
func (e *upstreamBodyError) Unwrap() error { return e.err }

// writeRequest writes req to the upstream and flushes it. A streamed body
// is framed here rather than by fasthttp, so that a body the client cut
// short reaches the upstream without its end: no last chunk, fewer bytes
// than Content-Length, then the gateway closes the conn.
func writeRequest(bw *bufio.Writer, req *fasthttp.Request) error {
	if !req.IsBodyStream() {
		if err := req.Write(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	// What Request.Write does with the URI before it writes the head.
	uri := req.URI()
	if host := uri.Host(); len(host) > 0 {
		req.Header.SetHostBytes(host)
	}
	req.Header.SetRequestURIBytes(uri.RequestURI())
	body := req.BodyStream()
	defer req.CloseBodyStream()
	eof, _ := req.UserValue(clientReadEOFKey{}).(readEOFer)
	if n := req.Header.ContentLength(); n >= 0 {
		if err := req.Header.Write(bw); err != nil {
			return err
		}
		sent, err := io.CopyN(bw, clientBodyReader{body}, int64(n))
		if err != nil {
			return bodyCopyError(err, sent)
		}
		return bw.Flush()
	}
	req.Header.SetContentLength(-1) // Transfer-Encoding: chunked
	if err := req.Header.Write(bw); err != nil {
		return err
	}
	buf := uploadBuffers.Get().(*[]byte)
	defer uploadBuffers.Put(buf)
	var sent int64
	for {
		n, err := body.Read(*buf)
		if n > 0 {
			sent += int64(n)
			// Each chunk goes out as it arrives: an upload streams.
			bw.WriteString(strconv.FormatInt(int64(n), 16))
			bw.WriteString("\r\n")
			bw.Write((*buf)[:n])
			bw.WriteString("\r\n")
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if err == io.EOF && eof != nil && eof.readEOF() {
			// fasthttp's reader ends the body at the client's FIN when it
			// falls between two chunks: the last chunk never came.
			err = httpbody.ErrTruncated
		}
		switch {
		case err == io.EOF:
			bw.WriteString("0\r\n")
			bw.Write(req.Header.TrailerHeader()) // the trailer fields and the final CRLF
			return bw.Flush()
		case err != nil:
			return &clientBodyError{err: err, sent: sent}
		}
	}
}

// clientBodyReader marks errors of reading the client's body, so that a
// copy that fails can tell the client's side from the upstream's.
type clientBodyReader struct{ r io.Reader }

func (c clientBodyReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		err = &clientBodyError{err: err}
	}
	return n, err
}

// bodyCopyError classifies the failure of a Content-Length body's copy:
// a short body (io.EOF before n bytes) or a read error are the client's,
// anything else the upstream's write.
func bodyCopyError(err error, sent int64) error {
	var cbe *clientBodyError
	switch {
	case err == io.EOF:
		return &clientBodyError{err: httpbody.ErrTruncated, sent: sent}
	case errors.As(err, &cbe):
		cbe.sent = sent
		return cbe
	}
	return err
}

// uploadBuffers hold a chunked upload between the client and the upstream.
var uploadBuffers = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// clientReadEOF is set by a client conn whose read met the end of the
// stream.
type clientReadEOF struct{ seen atomic.Bool }

func (e *clientReadEOF) readEOF() bool { return e.seen.Load() }

func (e *clientReadEOF) note(err error) {
	if err == io.EOF {
		e.seen.Store(true)
	}
}
