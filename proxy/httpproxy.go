package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/upstream"
)

// upstreamKeepAlive is how long an idle keep-alive connection to an
// upstream is kept. It is below node's default keepAliveTimeout (5 s) so
// the gateway drops an idle conn before the server does, instead of racing
// the server's close with a new request.
const upstreamKeepAlive = 4 * time.Second

// dialError marks a failure to connect: nothing reached the upstream, so
// the request may go to another server whatever its method.
type dialError struct{ err error }

// Error is the cause alone: it names the step already ("dial tcp ...",
// "tls handshake: ...").
func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// idleConn arms a fresh read deadline before every read, so an upstream
// exchange is cut only after `idle` without a byte, never while a long-poll
// is held or an event stream flows (fasthttp's ReadTimeout would cut a
// streamed body at a fixed time after the request).
type idleConn struct {
	net.Conn
	read, write idleDeadline
}

func newIdleConn(c net.Conn, idle time.Duration) *idleConn {
	return &idleConn{Conn: c, read: idleDeadline{idle: idle}, write: idleDeadline{idle: idle}}
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := c.read.refresh(c.Conn.SetReadDeadline); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if err := c.write.refresh(c.Conn.SetWriteDeadline); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// tlsIdleConn is an idleConn over a TLS conn whose handshake is done. Its
// Handshake method is how fasthttp recognizes a conn that is TLS already;
// without it a HostClient with IsTLS would wrap the conn in TLS again.
type tlsIdleConn struct{ *idleConn }

func (tlsIdleConn) Handshake() error { return nil }

// newHostClient returns the HTTP client for one upstream server, speaking
// TLS to it when ut is not nil.
//
// The TLS handshake happens in Dial rather than in fasthttp: with no
// WriteTimeout (which would cut streamed uploads) fasthttp defers the
// handshake to the first write, bounded by nothing but the idle deadline,
// and reports its failure as a failed request instead of a server that
// could not be reached, so the next server would not be tried.
func newHostClient(srv *upstream.Server, s clientSettings) *fasthttp.HostClient {
	connect, idle, ut := s.connect, s.idle, s.tls
	return &fasthttp.HostClient{
		Addr:  srv.Address,
		IsTLS: ut != nil,
		Dial: func(addr string) (net.Conn, error) {
			c, err := dialTimeout(addr, ut, connect)
			if err != nil {
				return nil, &dialError{err}
			}
			if ut != nil {
				return tlsIdleConn{newIdleConn(c, idle)}, nil
			}
			return newIdleConn(c, idle), nil
		},
		ReadBufferSize:      s.readBufferSize,
		MaxConns:            1 << 20, // long-polls hold conns; the OS limit is the real one
		MaxIdleConnDuration: upstreamKeepAlive,
	}
}

// serveHTTP reverse-proxies a plain HTTP request to the route's pool,
// streaming both bodies.
func (g *Gateway) serveHTTP(ctx *fasthttp.RequestCtx, rt *Route, f forwarded) {
	if problem := headerLineProblem(ctx.Request.Header.RawHeaders()); problem != "" {
		g.fail(ctx, rt, "-", fasthttp.StatusBadRequest, "malformed request: "+problem)
		return
	}
	headBuf := requestHeads.Get().(*[]byte)
	defer requestHeads.Put(headBuf)
	out := &outgoing{req: &ctx.Request}
	if ctx.Request.IsBodyStream() {
		out.src = &uploadSource{conn: ctx.Conn(), read: idleDeadline{idle: rt.gen.timeouts.idle}}
	}
	clientClose := false
	g.tryServers(ctx, rt, func(pl *placement, srv *upstream.Server) *tryFailure {
		// Made for each server tried: a request without Host (HTTP/1.0)
		// gets the server's address as its Host.
		*headBuf, clientClose = appendHTTPRequestHead((*headBuf)[:0], &ctx.Request.Header, f, srv.Address)
		out.head = *headBuf
		resp := fasthttp.AcquireResponse()
		err := forward(rt.set.clients.get(srv), out, resp)
		if err != nil {
			fasthttp.ReleaseResponse(resp)
			return g.exchangeFailed(ctx, rt, srv, err)
		}
		rt.Pool.ReportSuccess(srv)
		pl.handOff() // the response body releases it (upstreamBody.Close)
		g.relayResponse(ctx, rt, resp, srv, rt.Policy.stickyCookieFor(&pl.req, srv, ctx.IsTLS()))
		if clientClose {
			// After relayResponse: copying the upstream's header resets it.
			ctx.Response.Header.SetConnectionClose()
		}
		return nil
	})
}

// exchangeFailed answers a request whose exchange with srv failed before
// the upstream's answer began, or returns the failure for tryServers to
// take to another server.
func (g *Gateway) exchangeFailed(ctx *fasthttp.RequestCtx, rt *Route, srv *upstream.Server, err error) *tryFailure {
	var de *dialError
	if errors.As(err, &de) {
		return g.dialFailure(rt, srv, err)
	}
	var cbe *clientBodyError
	if errors.As(err, &cbe) {
		// The client's side failed: the upstream did nothing wrong, and
		// got the body without its end, so it cannot take it as whole.
		status, reason := fasthttp.StatusBadRequest, "request body cut short"
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, fasthttp.ErrTimeout):
			status, reason = fasthttp.StatusRequestTimeout, "request body not received in time"
		case !errors.Is(err, io.ErrUnexpectedEOF):
			reason = "malformed request body"
		}
		_, remote := clientAddress(ctx)
		g.errorf("client %s: %s %s: %v (not sent whole to upstream %s server %s)", remote, ctx.Method(), ctx.RequestURI(), err, rt.Pool.Name, srv.Address)
		g.fail(ctx, rt, srv.Address, status, reason)
		return nil
	}
	g.errorf("upstream %s server %s: %s %s: %v", rt.Pool.Name, srv.Address, ctx.Method(), ctx.RequestURI(), err)
	if replayable(&ctx.Request) && isConnectionLost(err) {
		// The server died with kept-alive conns in the pool: they
		// all fail the same way, and forward's one retry may take
		// another of them. Nothing reached the client yet, and the
		// request has no body to lose, so another server takes it.
		return &tryFailure{status: fasthttp.StatusBadGateway, reason: "upstream failed to answer", cause: failResponse}
	}
	var ie errInterim
	timedOut := errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, fasthttp.ErrTimeout)
	if timedOut {
		g.metrics.upstreamFailed(rt.set.name, srv.Address, failTimeout)
	} else {
		g.metrics.upstreamFailed(rt.set.name, srv.Address, failResponse)
	}
	switch {
	case errors.As(err, &ie):
		g.fail(ctx, rt, srv.Address, fasthttp.StatusBadGateway, "upstream sent an invalid response")
	case timedOut:
		g.fail(ctx, rt, srv.Address, fasthttp.StatusGatewayTimeout, "upstream did not answer in time")
	default:
		g.fail(ctx, rt, srv.Address, fasthttp.StatusBadGateway, "upstream failed to answer")
	}
	return nil
}

// relayResponse copies the upstream's answer to the client, with the
// sticky cookie's Set-Cookie if cookie is not empty. The body is relayed
// as it arrives, whatever its framing (see upstreamBody.WriteTo).
//
// The access log line is written when the body is done, so it carries the
// whole duration and size of a stream.
func (g *Gateway) relayResponse(ctx *fasthttp.RequestCtx, rt *Route, resp *fasthttp.Response, srv *upstream.Server, cookie string) {
	cleanHTTPResponse(&resp.Header)
	resp.Header.CopyTo(&ctx.Response.Header)
	// CopyTo also copied the upstream header's flags; a response without a
	// Content-Type must stay without one.
	ctx.Response.Header.SetNoDefaultContentType(true)
	// The gateway answers in its own version, whatever the upstream's: an
	// HTTP/1.0 status line would deny the chunked framing below.
	ctx.Response.Header.SetProtocol(http11)
	if cookie != "" {
		ctx.Response.Header.Add("Set-Cookie", cookie)
	}
	body := &upstreamBody{resp: resp, srv: srv, g: g, log: g.newRequestLog(ctx, rt, srv.Address)}
	if resp.BodyStream() == nil {
		ctx.Response.SetBody(resp.Body())
		body.n = int64(len(resp.Body()))
		body.Close()
		return
	}
	size := resp.Header.ContentLength()
	if size < 0 && !ctx.Request.Header.IsHTTP11() {
		g.relayUntilClose(ctx, body)
		return
	}
	if size < 0 {
		size = -1 // chunked towards the client, whatever framing upstream used
		if acceptsTrailers(&ctx.Request.Header) {
			body.trailersTo = &ctx.Response.Header
		}
	}
	// With no body byte behind the head yet (an event stream's head, a
	// slow answer's), the head goes out at once: a client waits on it
	// (EventSource is "connecting" until it comes). With body bytes
	// already here, head and body share one write, as before.
	if s, ok := resp.BodyStream().(*upstreamStream); ok && !s.bodyBuffered() {
		ctx.Response.ImmediateHeaderFlush = true
	}
	ctx.Response.SetBodyStream(body, size)
}

// requestHeads hold the heads of requests being forwarded.
var requestHeads = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

var http11 = []byte("HTTP/1.1")

// relayUntilClose sends an HTTP/1.0 client a body of unknown length: it
// cannot read chunked (RFC 9112 section 6.1), so the body ends with the
// connection. fasthttp frames every streamed body it writes (chunked when
// the length is not known), so the gateway takes the connection over and
// writes this response itself, then closes it. fasthttp runs the hijack
// handler even though the request or response says Connection: close,
// because it writes no response of its own (HijackSetNoResponse).
func (g *Gateway) relayUntilClose(ctx *fasthttp.RequestCtx, body *upstreamBody) {
	h := &ctx.Response.Header
	h.Del("Transfer-Encoding")
	h.SetContentLength(-2) // neither Content-Length nor Transfer-Encoding; Connection: close
	head := h.AppendBytes(nil)
	// fasthttp's Shutdown waits only for the conns it still serves.
	g.mu.Lock()
	g.streams++
	g.mu.Unlock()
	// end releases the body (the upstream conn and the server's lease) and
	// the stream's count, whether the body was sent or not.
	end := func() {
		body.Close()
		g.mu.Lock()
		g.streams--
		g.tunnelsChanged()
		g.mu.Unlock()
	}
	// The client conn owns them until the hijack handler takes them: if
	// fasthttp skips that handler, it closes the conn, which ends them.
	take := handOver(ctx, end)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		if !take() {
			return // the client conn closed first and ended them
		}
		// Writes go to the client's conn itself (its write deadline
		// included), each body read as it arrives.
		if _, err := c.Write(head); err == nil {
			body.WriteTo(c)
		}
		end()
		// fasthttp closes c when this returns: the body's end.
	})
}

// upstreamBody is an upstream response body being relayed. fasthttp closes
// it when the client response is done (or abandoned), which returns the
// upstream conn to the pool (or closes it) and ends the server's lease.
//
// A body that fails after its head went out (cut short, malformed, too
// slow) makes fasthttp end the client's response without its end (no last
// chunk, fewer bytes than Content-Length) and close the connection, so the
// client sees the failure too; the logs name the upstream as its cause.
type upstreamBody struct {
	resp   *fasthttp.Response
	srv    *upstream.Server
	g      *Gateway
	log    requestLog
	n      int64 // body bytes relayed
	err    error // the upstream body's failure
	closed bool
	// trailersTo is the client's response header, when the client accepts
	// trailer fields (TE: trailers) and gets the body chunked: the
	// upstream's trailers are added to it once the body has ended, and
	// fasthttp writes them after the last chunk.
	trailersTo *fasthttp.ResponseHeader
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.resp.BodyStream().Read(p)
	b.n += int64(n)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	if err == io.EOF && b.trailersTo != nil {
		if s, ok := b.resp.BodyStream().(*upstreamStream); ok {
			relayTrailers(b.trailersTo, s.trailers())
		}
		b.trailersTo = nil
	}
	return n, err
}

// relayTrailers adds the trailer fields of an upstream body (raw lines)
// to the client's response header as trailers. Fields that may not be
// trailers (framing, routing, authentication: RFC 9110 section 6.5.1)
// are dropped, as are those naming a hop-by-hop header.
func relayTrailers(h *fasthttp.ResponseHeader, raw []byte) {
	forEachRawHeader(raw, func(name, value, _ []byte) {
		if isOneOf(name, hopByHop) {
			return
		}
		if h.AddTrailerBytes(name) == nil {
			h.SetBytesKV(name, value)
		}
	})
}

// acceptsTrailers reports whether a client said it accepts trailer fields
// in a chunked response (a "trailers" token in TE).
func acceptsTrailers(h *fasthttp.RequestHeader) bool {
	accepts := false
	forEachRawHeader(h.RawHeaders(), func(name, value, _ []byte) {
		if bytes.EqualFold(name, []byte("TE")) && isOneOf([]byte("trailers"), connectionTokens(nil, value)) {
			accepts = true
		}
	})
	return accepts
}

// SupportsBodyWriteTo tells fasthttp to relay the body with WriteTo.
func (b *upstreamBody) SupportsBodyWriteTo() bool { return true }

// WriteTo relays the body into fasthttp's writer to the client. What the
// writer holds is flushed before each read that may wait for the upstream,
// so a body is relayed as it arrives whatever its framing (fasthttp flushes
// a chunked one after every chunk, a Content-Length one only when its
// buffer is full), while a body that came whole with its head still goes
// out in one write. When the upstream's body fails, what came before it is
// flushed too: fasthttp would close the conn with those bytes, and for a
// Content-Length body the head, still in its buffer, and the client would
// see an empty answer instead of a cut one.
func (b *upstreamBody) WriteTo(w io.Writer) (int64, error) {
	buf := relayBuffers.Get().(*[]byte)
	defer relayBuffers.Put(buf)
	flusher, _ := w.(interface{ Flush() error })
	stream, _ := b.resp.BodyStream().(*upstreamStream)
	var written int64
	for {
		if flusher != nil && stream != nil && stream.mayWait() {
			if err := flusher.Flush(); err != nil {
				return written, err
			}
		}
		n, err := b.Read(*buf)
		if n > 0 {
			m, werr := w.Write((*buf)[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
		}
		switch {
		case err == io.EOF:
			return written, nil
		case err != nil:
			if flusher != nil {
				flusher.Flush()
			}
			return written, err
		}
	}
}

func (b *upstreamBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	b.srv.Release()
	if b.err != nil {
		b.log.failed = "upstream"
		b.g.metrics.upstreamFailed(b.log.route.set.name, b.srv.Address, failResponse)
		b.g.errorf("upstream %s server %s: %s %s: %v after %d body bytes; the client's response is cut short",
			b.log.pool, b.srv.Address, b.log.method, b.log.uri, b.err, b.n)
	}
	b.g.writeRequestLog(b.log, b.n)
	return err
}

// replayable reports whether a request can be sent to another server after
// a failure: an idempotent method without a body (a streamed body has been
// consumed by the first try).
func replayable(req *fasthttp.Request) bool {
	// -2: neither Content-Length nor Transfer-Encoding, which in a request
	// means no body (RFC 9112 section 6.3).
	cl := req.Header.ContentLength()
	return idempotent(&req.Header) && (cl == 0 || cl == -2)
}

// idempotent reports the methods a request may be sent again with: those
// that read (GET, HEAD, OPTIONS).
func idempotent(h *fasthttp.RequestHeader) bool {
	return h.IsGet() || h.IsHead() || h.IsOptions()
}

// isConnectionLost reports errors of a connection that broke before the
// server's answer began: closed, reset, or ended early.
func isConnectionLost(err error) bool {
	return errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
