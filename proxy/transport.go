package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/httpbody"
	"github.com/wsgate/wsgate/tlsterm"
	"golang.org/x/sys/unix"
)

// The plain HTTP path's exchange with an upstream server. A HostClient is
// used for its pool of connections and nothing else: fasthttp's own
// request writing and response reading keep a connection whatever the
// server sent around its answer (a body on a HEAD or a 204, bytes past
// Content-Length, a 101 or an unsolicited 408), so the next client's
// request reads those bytes as its answer and the client after it gets
// the one before's (a response desync); they end a chunked body cut at a
// chunk boundary with a last chunk of their own, passing a truncated body
// on as complete; and they re-encode the request head.
//
// Here the request head is the client's, rewritten only where a proxy
// must (appendHTTPRequestHead); each body is read by its framing (package
// httpbody) in both directions; a connection is kept only when the answer
// ended exactly where its framing said; and a pooled connection is checked
// before reuse for anything that arrived while it was idle (nginx's
// keepalive module closes such a connection when it becomes readable).

// outgoing is one request as it is sent upstream.
type outgoing struct {
	req  *fasthttp.Request // the client's: method and body
	head []byte            // the head to send (appendHTTPRequestHead)
	src  *uploadSource     // the client's conn, when the body streams
}

// uploadSource is the client conn a request body streams from, as the
// upload's reader needs it: each read gets a fresh idle deadline (an
// upload is cut only after timeouts.idle without a byte, never while it
// progresses), and the end of the client's stream can be told from the
// end of the body.
type uploadSource struct {
	conn net.Conn // *clientConn or *tlsterm.Conn: what fasthttp reads
	read idleDeadline
}

// readEOF reports whether a read of the client's conn met the end of the
// stream (its FIN, or a TLS client's close_notify).
func (u *uploadSource) readEOF() bool {
	switch c := u.conn.(type) {
	case *clientConn:
		return c.readEOF()
	case *tlsterm.Conn:
		return c.ReadEOF()
	}
	return false
}

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

// forward sends out to the server of hc and reads the head of its
// answer into resp; the body is resp's body stream, whose Close releases
// the connection. A GET, HEAD or OPTIONS without a body is sent once more
// on another connection if the first closed before any answer (the usual
// cause: a kept-alive conn the server closed as it went idle, so the
// request never reached a handler). Never after a timeout (a held
// long-poll must not be sent twice), never a request with a body.
func forward(hc *fasthttp.HostClient, out *outgoing, resp *fasthttp.Response) error {
	retry, err := roundTrip(hc, out, resp)
	if err != nil && retry && !out.req.IsBodyStream() && idempotent(&out.req.Header) &&
		(errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed)) {
		_, err = roundTrip(hc, out, resp)
	}
	if err == io.EOF {
		err = fasthttp.ErrConnectionClosed
	}
	return err
}

// roundTrip is one try of forward; retry says whether the request may
// be sent again (nothing of it can have had an effect).
func roundTrip(hc *fasthttp.HostClient, out *outgoing, resp *fasthttp.Response) (retry bool, err error) {
	resp.Reset()
	resp.Header.DisableNormalizing()
	cc, err := hc.AcquireConn(0, false)
	// A pooled conn (one released before: LastUseTime is set) is used only
	// if nothing came on it while idle; each stale one is closed, and the
	// next is tried, a fresh dial last.
	for err == nil && !cc.LastUseTime().IsZero() && !quiet(cc.Conn()) {
		hc.CloseConn(cc)
		cc, err = hc.AcquireConn(0, false)
	}
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	resp.ParseNetConn(conn)

	bw := hc.AcquireWriter(conn)
	werr := writeRequest(bw, out)
	hc.ReleaseWriter(bw)
	var cbe *clientBodyError
	if errors.As(werr, &cbe) {
		hc.CloseConn(cc)
		return false, werr
	}
	if werr != nil && (errors.Is(werr, os.ErrDeadlineExceeded) || errors.Is(werr, fasthttp.ErrTimeout)) {
		hc.CloseConn(cc)
		return false, werr
	}

	br := hc.AcquireReader(conn)
	if err := readFinalHead(br, &resp.Header); err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		if werr != nil {
			return true, werr
		}
		var ie errInterim
		return !errors.As(err, &ie), err
	}
	keep := !resp.ConnectionClose()
	if werr != nil {
		// The server answered without taking the whole body (a 413, a
		// 401 before an upload) and closed: its answer is relayed, as
		// nginx does. The client's connection closes after it, since the
		// rest of the client's body was not read.
		keep = false
		resp.Header.SetConnectionClose()
	}
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
	if out.req.Header.IsHead() || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified || size == 0 {
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
		chunked, err := http10Chunked(br)
		if err != nil {
			return err
		}
		if err := h.Read(br); err != nil {
			return err
		}
		if chunked {
			// RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 is
			// faulty framing, and the connection must close after the
			// message. The server framed the body as chunked, so it is
			// read as chunked (as nginx does, and as an HTTP/1.1
			// answer's would be, over any Content-Length); the close
			// makes sure nothing it left behind is read as a response.
			h.SetContentLength(-1)
			h.SetConnectionClose()
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

// errHTTP10TransferEncoding is an HTTP/1.0 answer with a Transfer-Encoding
// other than one "chunked": its body's end cannot be found.
var errHTTP10TransferEncoding = errors.New("HTTP/1.0 response with a Transfer-Encoding other than chunked")

// http10Chunked reports whether the response head at the start of br is
// an HTTP/1.0 one with "Transfer-Encoding: chunked". fasthttp's
// ResponseHeader drops that field from a response that is not HTTP/1.1 and
// reads the body to the close, so the chunk framing would reach the client
// as data. It only peeks: ResponseHeader.Read reads the head after it. A
// head it cannot peek whole (cut short, larger than br) is left to Read to
// report.
func http10Chunked(br *bufio.Reader) (bool, error) {
	if b, err := br.Peek(len("HTTP/1.1")); err != nil || string(b) == "HTTP/1.1" {
		return false, nil
	}
	// Each pass has at least one more byte than the last, up to br's size.
	for {
		b, _ := br.Peek(br.Buffered())
		if done, chunked, err := transferEncodingOf(b); done {
			return chunked, err
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			return false, nil
		}
	}
}

// transferEncodingOf reads the Transfer-Encoding of the response head at
// the start of b: done is false if b holds no whole head yet.
func transferEncodingOf(b []byte) (done, chunked bool, err error) {
	_, rest, _ := bytes.Cut(b, []byte("\n")) // the status line
	n := 0
	for {
		line, after, found := bytes.Cut(rest, []byte("\n"))
		if !found {
			return false, false, nil
		}
		rest = after
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		if bytes.EqualFold(bytes.TrimRight(name, " \t"), []byte("Transfer-Encoding")) {
			n++
			chunked = bytes.EqualFold(bytes.Trim(value, " \t"), []byte("chunked"))
		}
	}
	switch {
	case n == 0:
		return true, false, nil
	case n > 1 || !chunked:
		return true, false, errHTTP10TransferEncoding
	}
	return true, true, nil
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
// TLS and tcpConn wrappers.
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

// trailers returns the trailer fields of a chunked body that ended (raw
// lines), or nil.
func (s *upstreamStream) trailers() []byte {
	if s.framing != framingChunked {
		return nil
	}
	return s.chunked.Trailers()
}

// bodyBuffered reports whether body bytes came in the reads that brought
// the head.
func (s *upstreamStream) bodyBuffered() bool { return s.br.Buffered() > 0 }

// mayWait reports whether the next Read may wait for the upstream: no
// byte of the body is buffered and the body is not over.
func (s *upstreamStream) mayWait() bool { return s.br.Buffered() == 0 && !s.complete() }

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

// writeRequest writes out's head and body to the upstream and flushes
// them. A streamed body is framed here, so that a body the client cut
// short reaches the upstream without its end: no last chunk, or fewer
// bytes than Content-Length, and then the gateway closes the conn.
func writeRequest(bw *bufio.Writer, out *outgoing) error {
	bw.Write(out.head)
	req := out.req
	if !req.IsBodyStream() {
		bw.Write(req.Body())
		return bw.Flush()
	}
	defer req.CloseBodyStream()
	body := &uploadReader{r: req.BodyStream(), src: out.src}
	if n := req.Header.ContentLength(); n >= 0 {
		sent, err := copyUpload(bw, body, int64(n), out.src.flusher())
		switch {
		case err == io.EOF:
			return &clientBodyError{err: httpbody.ErrTruncated, sent: sent}
		case err != nil:
			return err
		}
		return bw.Flush()
	}
	body.chunked = true
	buf := uploadBuffers.Get().(*[]byte)
	defer uploadBuffers.Put(buf)
	for {
		n, err := body.Read(*buf)
		if n > 0 {
			// Each chunk goes out as it arrives: an upload streams.
			bw.WriteString(strconv.FormatInt(int64(n), 16))
			bw.WriteString("\r\n")
			bw.Write((*buf)[:n])
			bw.WriteString("\r\n")
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		switch {
		case err == io.EOF:
			bw.WriteString("0\r\n")
			bw.Write(req.Header.TrailerHeader()) // the trailer fields and the final CRLF
			return bw.Flush()
		case err != nil:
			return err
		}
	}
}

// copyUpload copies n bytes of a request body into bw, as io.CopyN would.
// Before each read of the client's conn, which may wait, bw is flushed
// (flusher, if not nil): the upstream gets a slow upload's head and first
// bytes at once, while a body that came with its head still goes in the
// same write (no read of the conn is needed for it).
func copyUpload(bw *bufio.Writer, body io.Reader, n int64, flusher *uploadFlusher) (int64, error) {
	if flusher != nil {
		flusher.w = bw
		defer func() { flusher.w = nil }()
	}
	buf := uploadBuffers.Get().(*[]byte)
	defer uploadBuffers.Put(buf)
	var sent int64
	for sent < n {
		m, err := body.Read((*buf)[:min(int64(len(*buf)), n-sent)])
		if m > 0 {
			if _, werr := bw.Write((*buf)[:m]); werr != nil {
				return sent, werr
			}
			sent += int64(m)
		}
		if err != nil && (err != io.EOF || sent < n) {
			return sent, err
		}
	}
	return sent, nil
}

// uploadFlusher flushes, before each read of a client conn, the writer to
// the upstream of the upload being read from it. Reads of a conn, and so
// the flush, happen on the goroutine serving its request.
type uploadFlusher struct{ w *bufio.Writer }

// flush sends what w holds; a failure stays in w for its next write.
func (f *uploadFlusher) flush() {
	if f.w != nil {
		f.w.Flush()
	}
}

// flusher returns the uploadFlusher of the client's TCP conn (under TLS
// too), or nil.
func (u *uploadSource) flusher() *uploadFlusher {
	if u == nil {
		return nil
	}
	if cc := clientConnUnder(u.conn); cc != nil {
		return &cc.upload
	}
	return nil
}

// uploadReader reads the client's request body for writeRequest. Its
// errors are *clientBodyError, so a copy that fails can tell the client's
// side from the upstream's.
type uploadReader struct {
	r       io.Reader
	src     *uploadSource
	chunked bool
	read    int64
}

func (u *uploadReader) Read(p []byte) (int, error) {
	if u.src != nil {
		if err := u.src.read.refresh(u.src.conn.SetReadDeadline); err != nil {
			return 0, &clientBodyError{err: err, sent: u.read}
		}
	}
	n, err := u.r.Read(p)
	u.read += int64(n)
	if err == io.EOF && u.chunked && u.src != nil && u.src.readEOF() {
		// fasthttp's reader ends a chunked body at the client's FIN when
		// it falls between two chunks: the last chunk never came.
		err = httpbody.ErrTruncated
	}
	if err != nil && err != io.EOF {
		err = &clientBodyError{err: err, sent: u.read}
	}
	return n, err
}

// uploadBuffers hold an upload between the client and the upstream.
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
