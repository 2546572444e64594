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
	"time"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/tlsterm"
	"github.com/wsgate/wsgate/upstream"
)

// maxResponseHead bounds the upstream's answer to a handshake.
const maxResponseHead = 64 << 10

var errHeadTooLarge = errors.New("upstream response head exceeds 64 KiB")

// serveWebSocket forwards a client's WebSocket handshake to a server of the
// route's pool, relays the answer and, on a valid 101, hands both conns to
// a tunnel.
func (g *Gateway) serveWebSocket(ctx *fasthttp.RequestCtx, rt *Route, f forwarded) {
	key, herr := checkClientHandshake(&ctx.Request.Header)
	if herr != nil {
		g.fail(ctx, rt, "-", herr.status, herr.reason) // the route is known: its pool is logged and counted
		if herr.status == fasthttp.StatusUpgradeRequired {
			// RFC 6455 section 4.4: name the versions the server speaks.
			ctx.Response.Header.Set("Sec-WebSocket-Version", "13")
		}
		return
	}
	head := appendUpgradeRequestHead(nil, &ctx.Request.Header, f)

	g.tryServers(ctx, rt, func(pl *placement, srv *upstream.Server) *tryFailure {
		conn, err := dialTimeout(srv.Address, rt.tls, rt.gen.timeouts.connect)
		if err != nil {
			return g.dialFailure(rt, srv, err)
		}
		return g.exchangeHandshake(ctx, rt, pl, srv, conn, head, key, f.host)
	})
}

// exchangeHandshake sends the handshake on conn, reads the upstream's
// answer within the handshake timeout and relays it. A failure before
// anything was relayed (no answer in time, a broken one, a 101 with a
// wrong Accept) is returned, so the next server can be tried. host is the
// Host the client asked for, as text.
func (g *Gateway) exchangeHandshake(ctx *fasthttp.RequestCtx, rt *Route, pl *placement, srv *upstream.Server, conn net.Conn, head []byte, key, host string) *tryFailure {
	start := time.Now()
	conn.SetDeadline(start.Add(rt.gen.timeouts.handshake))
	resp, err := roundTripHead(conn, head)
	if err != nil {
		conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			g.errorf("upstream %s server %s: no handshake answer within %v", rt.Pool.Name, srv.Address, rt.gen.timeouts.handshake)
			return &tryFailure{status: fasthttp.StatusGatewayTimeout, reason: "upstream did not answer the handshake in time", cause: failTimeout}
		}
		g.errorf("upstream %s server %s: handshake: %v", rt.Pool.Name, srv.Address, err)
		return &tryFailure{status: fasthttp.StatusBadGateway, reason: "upstream failed during the websocket handshake", cause: failHandshake}
	}
	if resp.status != fasthttp.StatusSwitchingProtocols {
		defer conn.Close()
		if resp.status >= 500 {
			// Relayed as the upstream's own answer, but it counts
			// against the server's health.
			rt.Pool.ReportFailure(srv)
			g.metrics.upstreamFailed(rt.set.name, srv.Address, failStatus5xx)
		}
		g.relayRefusal(ctx, rt, srv, conn, resp)
		return nil
	}
	if problem := resp.problem101(key); problem != "" {
		conn.Close()
		g.errorf("upstream %s server %s: 101 with %s", rt.Pool.Name, srv.Address, problem)
		return &tryFailure{status: fasthttp.StatusBadGateway, reason: "upstream answered the handshake with " + problem, cause: failHandshake}
	}
	conn.SetDeadline(time.Time{})
	rt.Pool.ReportSuccess(srv)
	if c := rt.Policy.stickyCookieFor(&pl.req, srv, ctx.IsTLS()); c != "" {
		resp.insertHeader("Set-Cookie: " + c)
	}

	pl.handOff() // the tunnel releases it when it ends, or abandon if none starts
	g.mu.Lock()
	g.pending++
	g.mu.Unlock()
	_, clientAddr := clientAddress(ctx)
	info := tunnelInfo{route: rt, server: srv, clientAddr: clientAddr, host: host, uri: string(ctx.RequestURI()),
		start: start, requested: ctx.Time(), headLen: resp.head}
	// abandon releases what the 101 took (the upstream conn, the server's
	// lease, the pending count) when no tunnel will start.
	abandon := func() {
		conn.Close()
		srv.Release()
		g.tunnelAborted()
	}
	// The client conn owns them until the hijack handler takes them: if
	// fasthttp skips that handler, it closes the conn, which abandons them.
	take := handOver(ctx, abandon)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		// This runs on a goroutine fasthttp started for it; it must return
		// at once so the RequestCtx and its read buffer go back to their
		// pools.
		if !take() {
			return // the client conn closed first and abandoned them
		}
		// This handler owns them now, until startTunnel takes them.
		client, early, err := unwrapHijacked(c)
		if err != nil {
			abandon() // fasthttp closes c when this returns
			return
		}
		g.startTunnel(client, conn, resp.raw, early, info)
	})
	return nil
}

// handshakeResponse is the upstream's answer to a handshake.
type handshakeResponse struct {
	raw    []byte // the response head and every byte read after it
	head   int    // length of the head within raw
	status int
}

// roundTripHead writes head and reads the response head. Bytes that arrive
// in the same reads after the head (the first WebSocket frames, often: an
// Engine.IO server speaks first) stay in raw so they are forwarded, not lost.
func roundTripHead(conn net.Conn, head []byte) (*handshakeResponse, error) {
	if _, err := conn.Write(head); err != nil {
		return nil, err
	}
	// Read into a pooled buffer; the answer keeps a copy of its own size.
	pooled := relayBuffers.Get().(*[]byte)
	defer relayBuffers.Put(pooled)
	buf := (*pooled)[:0]
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= maxResponseHead {
				return nil, errHeadTooLarge
			}
			// Grown by hand: append would round the capacity up to a
			// size class (80 KiB), and the limit with it.
			grown := make([]byte, len(buf), min(2*cap(buf), maxResponseHead))
			buf = grown[:copy(grown, buf)]
		}
		n, err := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if end := bytes.Index(buf, []byte("\r\n\r\n")); end >= 0 {
			return parseResponseHead(bytes.Clone(buf), end+4)
		}
		if err != nil {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// insertHeader adds a header line at the end of the response head, before
// the blank line; the bytes after the head are kept.
func (r *handshakeResponse) insertHeader(line string) {
	out := make([]byte, 0, len(r.raw)+len(line)+2)
	out = append(out, r.raw[:r.head-2]...)
	out = append(out, line...)
	out = append(out, "\r\n"...)
	out = append(out, r.raw[r.head-2:]...)
	r.head += len(line) + 2
	r.raw = out
}

func parseResponseHead(raw []byte, headLen int) (*handshakeResponse, error) {
	head := raw[:headLen]
	lineEnd := bytes.IndexByte(head, '\n')
	statusLine := bytes.TrimRight(head[:lineEnd], "\r")
	// "HTTP/1.1 101 Switching Protocols": three digits, then a space or
	// the end (RFC 9112 section 4); "1011" or "+01" is no status.
	if !bytes.HasPrefix(statusLine, []byte("HTTP/1.")) || len(statusLine) < 12 || statusLine[8] != ' ' ||
		len(statusLine) > 12 && statusLine[12] != ' ' {
		return nil, errors.New("malformed status line " + strconv.Quote(string(statusLine)))
	}
	status := 0
	for _, c := range statusLine[9:12] {
		if c < '0' || c > '9' {
			return nil, errors.New("malformed status line " + strconv.Quote(string(statusLine)))
		}
		status = status*10 + int(c-'0')
	}
	return &handshakeResponse{raw: raw, head: headLen, status: status}, nil
}

// problem101 says why the client must not get this 101 to a handshake
// whose key was key, or "" if nothing: it is relayed byte for byte, so it
// must be one RFC 6455 section 4.1 lets a client take (a client would fail
// the connection otherwise; the next server may answer well), and one it
// reads as the gateway did (one Accept, no folded lines).
func (r *handshakeResponse) problem101(key string) string {
	head := r.raw[:r.head]
	lineEnd := bytes.IndexByte(head, '\n')
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 ")) {
		// HTTP/1.0 has no 101 and no Upgrade (RFC 9110 section 15.2).
		return "an " + string(head[:8]) + " status line"
	}
	fields := head[lineEnd+1:]
	if problem := headerLineProblem(fields); problem != "" {
		return problem
	}
	var accepts, upgrades int
	var accept []byte
	var websocket, connUpgrade bool
	forEachRawHeader(fields, func(name, value, _ []byte) {
		switch {
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")):
			accepts++
			accept = value
		case bytes.EqualFold(name, []byte("Upgrade")):
			upgrades++
			websocket = bytes.EqualFold(value, []byte("websocket"))
		case bytes.EqualFold(name, []byte("Connection")):
			connUpgrade = connUpgrade || hasToken(value, "upgrade")
		}
	})
	switch {
	case accepts > 1:
		return "more than one Sec-WebSocket-Accept"
	case upgrades > 1:
		return "more than one Upgrade"
	case !websocket:
		return "no Upgrade: websocket"
	case !connUpgrade:
		return "no Connection: upgrade"
	case !bytes.Equal(accept, appendAcceptKey(make([]byte, 0, 28), key)):
		return "a wrong Sec-WebSocket-Accept"
	}
	return ""
}

// relayRefusal passes a non-101 answer (403, 404, 401 with a challenge...)
// to the client as it is: status, headers and body.
func (g *Gateway) relayRefusal(ctx *fasthttp.RequestCtx, rt *Route, srv *upstream.Server, conn net.Conn, r *handshakeResponse) {
	var resp fasthttp.Response
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(r.raw), conn))
	if err := resp.ReadLimitBody(br, 1<<20); err != nil {
		g.errorf("upstream %s server %s: reading %d answer to a handshake: %v", rt.Pool.Name, srv.Address, r.status, err)
		g.metrics.upstreamFailed(rt.set.name, srv.Address, failHandshake)
		g.fail(ctx, rt, srv.Address, fasthttp.StatusBadGateway, "upstream sent an unreadable answer to the websocket handshake")
		return
	}
	cleanHTTPResponse(&resp.Header)
	resp.CopyTo(&ctx.Response)
	ctx.Response.Header.SetNoDefaultContentType(true) // CopyTo reset it
	l := g.newRequestLog(ctx, rt, srv.Address)
	l.websocket = true
	g.writeRequestLog(l, int64(len(resp.Body())))
}

// unwrapHijacked returns the raw conn under fasthttp's hijack wrapper and
// the bytes the client sent after its request head that fasthttp already
// buffered: a client may send its first frame in the same write as the
// handshake. The wrapper reads through the server's bufio.Reader; a read
// deadline in the past makes it hand back only what is buffered, because Go
// checks the deadline before it would call read(2).
func unwrapHijacked(c net.Conn) (net.Conn, []byte, error) {
	u, ok := c.(interface{ UnsafeConn() net.Conn })
	if !ok {
		return nil, nil, fmt.Errorf("cannot take over a %T", c)
	}
	if err := c.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return nil, nil, err
	}
	var early []byte
	buf := relayBuffers.Get().(*[]byte)
	for {
		n, err := c.Read(*buf)
		early = append(early, (*buf)[:n]...)
		if err != nil {
			break
		}
	}
	relayBuffers.Put(buf)
	var raw net.Conn
	var detach func()
	switch cc := u.UnsafeConn().(type) {
	case *clientConn:
		// The relay takes the TCP conn itself (its descriptor).
		raw, detach = cc.TCPConn, func() { cc.detached.Store(true) }
	case *tlsterm.Conn:
		// The *tls.Conn, whose NetConn is a clientConn: the relay takes
		// the session and reroutes the clientConn to itself
		// (relayEndpoint).
		raw, detach = cc.Conn, cc.Detach
	default:
		// fasthttp would close it when the hijack handler returns.
		return nil, nil, fmt.Errorf("cannot take over a %T", cc)
	}
	if err := raw.SetReadDeadline(time.Time{}); err != nil {
		return nil, nil, err // not detached: closing c closes it
	}
	// From here the tunnel owns the conn: fasthttp's close after the
	// hijack handler leaves it open.
	detach()
	return raw, early, nil
}

// refuse answers the client with status and a one-line reason when no
// upstream server is involved.
func (g *Gateway) refuse(ctx *fasthttp.RequestCtx, status int, reason string) {
	g.fail(ctx, nil, "-", status, reason)
}

// fail answers the client with status and a one-line reason, logs which
// route and server it concerns, and closes the connection: after a refused
// or failed request the state of the client's stream is not known (an
// unread body, a half-sent upgrade).
func (g *Gateway) fail(ctx *fasthttp.RequestCtx, rt *Route, upstreamAddr string, status int, reason string) {
	g.failSince(ctx, rt, upstreamAddr, status, reason, time.Time{})
}

// failSince is fail for a request the gateway began to serve at since,
// when that is before fasthttp read its head (an event loop tried the
// upstream first); zero for ctx's time.
func (g *Gateway) failSince(ctx *fasthttp.RequestCtx, rt *Route, upstreamAddr string, status int, reason string, since time.Time) {
	ctx.Response.Reset()
	ctx.Response.Header.DisableNormalizing() // "Sec-WebSocket-Version", not "Sec-Websocket-Version"
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(reason + "\n")
	ctx.SetConnectionClose()
	l := g.newRequestLog(ctx, rt, upstreamAddr)
	if !since.IsZero() {
		l.start = since
	}
	// A head that could not be read has no headers to tell.
	l.websocket = !ctx.Time().IsZero() && isUpgrade(&ctx.Request.Header)
	g.writeRequestLog(l, int64(len(reason)+1))
}
