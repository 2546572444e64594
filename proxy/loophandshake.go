package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/internal/nbsys"
	"github.com/wsgate/wsgate/relay"
	"github.com/wsgate/wsgate/upstream"
	"golang.org/x/sys/unix"
)

// loopHandshake is a connection of a plain listener from the moment a
// relay loop accepted it until its first request is placed: in a tunnel
// on the same loop (the WebSocket handshake went through), or with the
// fasthttp server (anything else). The loop reads the request head,
// parses it with fasthttp's header type, routes it, connects to a server
// with a non-blocking connect, writes the head, reads the 101 and starts
// the tunnel, with no goroutine involved and no descriptor entering Go's
// poller.
//
// The loop carries only what it can carry whole. A request that is not a
// WebSocket handshake the gateway would forward (no route, a malformed
// or refused handshake, a route to a TLS upstream, a head that did not
// come in one read...) goes to the fasthttp server before any upstream is
// involved, with the bytes read replayed, and is served there as any
// request. An exchange that ends in an answer other than a 101 (the
// upstream's refusal, or the gateway's 502/503/504 once no server is
// left) goes there too, with that outcome decided (loopDecision), so
// every answer, log line and metric is written by the same code as on
// TLS listeners.
//
// The loop goroutine owns it, and with it the client socket (cfd), the
// upstream socket (ufd) and the server's lease, until it hands them on:
// to the relay's tunnel, or to serveConn. Ready and Close are the loop's
// calls; fields need no lock.
type loopHandshake struct {
	g   *Gateway
	lp  relay.Loop
	b   *boundListener
	gen *generation
	li  *listenerInfo

	cfd                  int
	clientIP, clientAddr string
	accepted             time.Time
	timer                *relay.Timer
	watching             int // the descriptor watched now, or -1

	// The request, once its head is read.
	data      []byte // what the client sent: the head, then early frames
	headLen   int
	requested time.Time
	uri, host string
	key       string
	rt        *Route
	pl        *placement
	upHead    []byte // the head sent upstream
	pending   bool   // counted in Gateway.pending (a drain waits for it)

	// The try in progress.
	srv      *upstream.Server
	addr     netip.AddrPort
	ufd      int // -1 when none
	phase    loopPhase
	tryStart time.Time
	written  int // bytes of upHead written
	// established: the connection is known to be made (connect said so,
	// or a write went through).
	established bool
	resp        []byte // the answer read so far, when it took more than one read
	done        bool   // handed on or closed: nothing is the handshake's any more
}

type loopPhase uint8

const (
	phaseHead       loopPhase = iota // waiting for the client's head
	phaseConnecting                  // non-blocking connect under way
	phaseWriting                     // writing the head upstream
	phaseAnswer                      // reading the upstream's answer
)

// startLoopHandshake takes a connection the loop just accepted.
func startLoopHandshake(g *Gateway, lp relay.Loop, b *boundListener, gen *generation, li *listenerInfo, fd int, sa syscall.Sockaddr) {
	h := &loopHandshake{g: g, lp: lp, b: b, gen: gen, li: li, cfd: fd, ufd: -1, watching: -1, accepted: time.Now()}
	h.clientIP, h.clientAddr = addrOf(sa)
	h.readHead()
}

// Ready is a readiness event of the one descriptor watched.
func (h *loopHandshake) Ready(relay.Loop, uint32) {
	switch h.phase {
	case phaseHead:
		h.readHead()
	default:
		h.upstreamReady()
	}
}

// Close releases everything: the loop is stopping.
func (h *loopHandshake) Close() {
	if h.done {
		return
	}
	h.done = true
	nbsys.Close(h.cfd)
	h.closeUpstream()
	if h.srv != nil {
		h.srv.Release()
	}
	h.uncount()
}

// watch starts watching fd for h, in place of the descriptor watched
// before: each of h's descriptors is watched once, the client's while its
// head is awaited, the upstream's from its connect on.
func (h *loopHandshake) watch(fd int, events uint32) bool {
	h.unwatch()
	if h.lp.Watch(fd, events, h) != nil {
		return false
	}
	h.watching = fd
	return true
}

func (h *loopHandshake) unwatch() {
	if h.watching >= 0 {
		h.lp.Forget(h.watching)
		h.watching = -1
	}
}

func (h *loopHandshake) setTimer(at time.Time, fn func()) {
	h.lp.StopTimer(h.timer)
	h.timer = h.lp.AfterFunc(at.UnixNano(), fn)
}

func (h *loopHandshake) stopTimer() {
	h.lp.StopTimer(h.timer)
	h.timer = nil
}

// readHead reads the client's head. A head that came whole in one read
// is parsed here; anything else (part of a head, nothing before the
// handshake timeout, an end or an error) goes to the fasthttp server,
// which reads on and answers as it does on any conn.
func (h *loopHandshake) readHead() {
	buf := h.lp.Buffer()
	n, err := nbsys.Read(h.cfd, buf)
	if err == unix.EAGAIN || err == unix.EINTR {
		if h.watching < 0 {
			if !h.watch(h.cfd, unix.EPOLLIN|unix.EPOLLRDHUP) {
				h.handOver(nil)
				return
			}
			h.setTimer(h.headDue(), func() { h.timer = nil; h.handOver(nil) })
		}
		return
	}
	if n <= 0 {
		h.handOver(nil)
		return
	}
	data := buf[:n]
	end := bytes.Index(data, []byte("\r\n\r\n"))
	if end < 0 {
		h.handOver(bytes.Clone(data))
		return
	}
	h.data, h.headLen = bytes.Clone(data), end+4
	h.unwatch()
	h.stopTimer()
	h.route()
}

// headDue is when the first request head is due: timeouts.handshake after
// the accept.
func (h *loopHandshake) headDue() time.Time { return h.accepted.Add(h.gen.timeouts.handshake) }

// handOver gives the connection to the fasthttp server before any upstream
// was involved, with what was read of it.
func (h *loopHandshake) handOver(replay []byte) {
	h.unwatch()
	h.stopTimer()
	h.done = true
	h.g.serveConn(h.b, h.cfd, replay, h.headDue(), nil)
}

// parsers hold what parsing a head takes; one is in use per loop at a time.
type headParser struct {
	hdr fasthttp.RequestHeader
	uri fasthttp.URI
	br  *bufio.Reader
	src bytes.Reader
}

var headParsers = sync.Pool{New: func() any {
	p := &headParser{}
	// A head read in one read of the loop's buffer fits.
	p.br = bufio.NewReaderSize(&p.src, relayReadSize)
	p.hdr.DisableNormalizing()
	return p
}}

// relayReadSize is the size of a relay loop's read buffer, the largest
// head the loop reads in one read.
const relayReadSize = 64 << 10

// route parses the head and decides: forward it from the loop, or hand
// the conn to the fasthttp server.
func (h *loopHandshake) route() {
	if h.headLen > h.gen.maxHeaderBytes || len(h.gen.acme) > 0 {
		// The server answers 431; HTTP-01 challenges are its to answer.
		h.handOver(h.data)
		return
	}
	p := headParsers.Get().(*headParser)
	defer headParsers.Put(p)
	p.src.Reset(h.data[:h.headLen])
	p.br.Reset(&p.src)
	p.hdr.Reset()
	p.hdr.DisableNormalizing()
	if err := p.hdr.Read(p.br); err != nil || !isUpgrade(&p.hdr) {
		h.handOver(h.data)
		return
	}
	p.uri.Reset()
	if err := p.uri.Parse(p.hdr.Host(), p.hdr.RequestURI()); err != nil {
		h.handOver(h.data)
		return
	}
	rt := h.gen.router.Match(string(p.uri.Host()), string(p.uri.Path()))
	if rt == nil || rt.tls != nil {
		h.handOver(h.data)
		return
	}
	key, herr := checkClientHandshake(&p.hdr)
	if herr != nil {
		h.handOver(h.data)
		return
	}
	h.requested = time.Now()
	h.rt, h.key = rt, key
	h.host, h.uri = string(p.uri.Host()), string(p.hdr.RequestURI())
	f := newPlainForwarded(&p.hdr, h.clientIP, h.host, h.li, h.gen.certHeaders)
	h.upHead = appendUpgradeRequestHead(nil, &p.hdr, f)
	h.pl = newPlacement(rt, rt.Policy.request(&p.hdr, &p.uri, h.clientIP))

	// From here a drain waits for the handshake, as for one on a server.
	h.g.mu.Lock()
	h.g.pending++
	h.g.mu.Unlock()
	h.pending = true
	h.try()
}

// uncount ends the handshake's part in Gateway.pending, once.
func (h *loopHandshake) uncount() {
	if h.pending {
		h.pending = false
		h.g.tunnelAborted()
	}
}

// try offers the next server, or ends with the gateway's answer.
func (h *loopHandshake) try() {
	srv, answer := h.pl.next()
	if answer != nil {
		h.decide(&loopDecision{answer: answer})
		return
	}
	h.srv, h.written, h.resp = srv, 0, nil
	// Server addresses are IP:port: DNS discovery resolves names.
	ap, err := netip.ParseAddrPort(srv.Address)
	if err != nil {
		h.tryFailed(h.g.dialFailure(h.rt, srv, err))
		return
	}
	h.addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	h.connect()
}

// connect opens a non-blocking connection to h.addr, with the socket
// options Go's dialer sets (no delay, keep-alive). The socket is watched
// once, edge-triggered, for both ways: it becomes writable when the
// connection is made (the head is written then) and readable when the
// answer comes; the tunnel then takes the registration over.
func (h *loopHandshake) connect() {
	family := unix.AF_INET
	var sa syscall.Sockaddr
	if h.addr.Addr().Is4() {
		sa = &syscall.SockaddrInet4{Port: int(h.addr.Port()), Addr: h.addr.Addr().As4()}
	} else {
		family = unix.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(h.addr.Port()), Addr: h.addr.Addr().As16()}
	}
	fd, err := nbsys.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		h.dialFailed(os.NewSyscallError("socket", err))
		return
	}
	h.ufd = fd
	h.established = false
	setUpstreamSocketOptions(fd)
	if err := nbsys.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		h.dialFailed(os.NewSyscallError("connect", err))
		return
	}
	h.phase = phaseConnecting
	if !h.watch(fd, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET) {
		h.dialFailed(errors.New("epoll cannot watch the socket"))
		return
	}
	h.setTimer(time.Now().Add(h.gen.timeouts.connect), func() {
		h.timer = nil
		h.dialFailed(os.ErrDeadlineExceeded)
	})
}

// dialFailed: the connection to h.srv could not be made.
func (h *loopHandshake) dialFailed(err error) {
	h.tryFailed(h.g.dialFailure(h.rt, h.srv, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(h.addr), Err: err}))
}

// setUpstreamSocketOptions sets what Go's dialer sets on a new connection:
// no Nagle delay (the relay writes each frame as it comes) and keep-alive
// probes after 15 s idle, every 15 s (Go's defaults).
func setUpstreamSocketOptions(fd int) {
	nbsys.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	nbsys.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	nbsys.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, clientKeepAliveIdle)
	nbsys.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, clientKeepAliveInterval)
}

// upstreamReady is an event of the upstream socket: the connection made
// or failed, room for the rest of the head, the answer.
func (h *loopHandshake) upstreamReady() {
	if h.phase != phaseAnswer {
		h.writeHead()
	}
	if h.phase == phaseAnswer {
		h.readAnswer()
	}
}

// connectionMade starts the exchange on a connection known to be made:
// from here the handshake timeout bounds it, as the goroutine path's
// deadline does.
func (h *loopHandshake) connectionMade() {
	h.established = true
	h.phase = phaseWriting
	h.tryStart = time.Now()
	h.setTimer(h.tryStart.Add(h.gen.timeouts.handshake), func() {
		h.timer = nil
		h.g.errorf("upstream %s server %s: no handshake answer within %v", h.rt.Pool.Name, h.srv.Address, h.gen.timeouts.handshake)
		h.tryFailed(&tryFailure{status: fasthttp.StatusGatewayTimeout, reason: "upstream did not answer the handshake in time", cause: failTimeout})
	})
}

// writeHead writes what is left of the head. A connect that failed shows
// as the first write's error (the socket's error), so no getsockopt is
// needed to learn it.
func (h *loopHandshake) writeHead() {
	for h.written < len(h.upHead) {
		n, err := nbsys.Write(h.ufd, h.upHead[h.written:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return // still connecting, or no room: the next edge says when
		case err != nil && !h.established:
			h.dialFailed(os.NewSyscallError("connect", err))
			return
		case err != nil:
			h.handshakeFailed(os.NewSyscallError("write", err))
			return
		}
		if !h.established {
			h.connectionMade()
		}
		h.written += n
	}
	h.phase = phaseAnswer
}

// readAnswer reads the upstream's answer until its head is whole (then it
// is judged) or the socket is drained: its events are edge-triggered.
func (h *loopHandshake) readAnswer() {
	buf := h.lp.Buffer()
	for {
		n, err := nbsys.Read(h.ufd, buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return
		}
		if n <= 0 {
			if err == nil {
				err = io.ErrUnexpectedEOF
			} else {
				err = os.NewSyscallError("read", err)
			}
			h.handshakeFailed(err)
			return
		}
		raw, headLen, err := appendAnswer(h.resp, buf[:n])
		switch {
		case err != nil:
			h.handshakeFailed(err)
			return
		case headLen > 0:
			h.answered(raw, headLen)
			return
		}
		h.resp = raw
	}
}

// appendAnswer adds chunk, the next bytes read of an upstream's answer, to
// raw, what came before (nil at first; chunk is not kept, a copy is). It
// returns the answer so far and, once its head is whole, the head's
// length; an error once the head cannot fit in maxResponseHead.
func appendAnswer(raw, chunk []byte) ([]byte, int, error) {
	if raw == nil {
		// The usual case: the whole head in the first read.
		raw = bytes.Clone(chunk)
		if end := bytes.Index(raw, []byte("\r\n\r\n")); end >= 0 && end+4 <= maxResponseHead {
			return raw, end + 4, nil
		}
	} else {
		raw = append(raw, chunk...)
		// Search from a little before the new bytes, where a split
		// "\r\n\r\n" may begin.
		from := max(0, len(raw)-len(chunk)-3)
		if end := bytes.Index(raw[from:], []byte("\r\n\r\n")); end >= 0 && from+end+4 <= maxResponseHead {
			return raw, from + end + 4, nil
		}
	}
	if len(raw) >= maxResponseHead {
		return nil, 0, errHeadTooLarge
	}
	return raw, 0, nil
}

// handshakeFailed: the exchange with the server failed before anything
// reached the client.
func (h *loopHandshake) handshakeFailed(err error) {
	h.g.errorf("upstream %s server %s: handshake: %v", h.rt.Pool.Name, h.srv.Address, err)
	h.tryFailed(&tryFailure{status: fasthttp.StatusBadGateway, reason: "upstream failed during the websocket handshake", cause: failHandshake})
}

// tryFailed ends the try of h.srv and moves on as placement.failed says.
func (h *loopHandshake) tryFailed(failure *tryFailure) {
	h.stopTimer()
	h.closeUpstream()
	srv := h.srv
	h.srv = nil
	srv.Release()
	if answer := h.g.failed(h.pl, srv, failure); answer != nil {
		h.decide(&loopDecision{answer: answer})
		return
	}
	h.try()
}

func (h *loopHandshake) closeUpstream() {
	if h.ufd >= 0 {
		if h.watching == h.ufd {
			h.unwatch()
		}
		nbsys.Close(h.ufd)
		h.ufd = -1
	}
}

// answered judges the upstream's answer, whose head is raw[:headLen].
func (h *loopHandshake) answered(raw []byte, headLen int) {
	resp, err := parseResponseHead(raw, headLen)
	if err != nil {
		h.handshakeFailed(err)
		return
	}
	if resp.status != fasthttp.StatusSwitchingProtocols {
		rt, srv := h.rt, h.srv
		if resp.status >= 500 {
			// Relayed as the upstream's own answer, but it counts
			// against the server's health.
			rt.Pool.ReportFailure(srv)
			h.g.metrics.upstreamFailed(rt.set.name, srv.Address, failStatus5xx)
		}
		h.refused(resp)
		return
	}
	if problem := resp.problem101(h.key); problem != "" {
		h.g.errorf("upstream %s server %s: 101 with %s", h.rt.Pool.Name, h.srv.Address, problem)
		h.tryFailed(&tryFailure{status: fasthttp.StatusBadGateway, reason: "upstream answered the handshake with " + problem, cause: failHandshake})
		return
	}
	h.switched(resp)
}

// switched starts the tunnel on this loop: the 101 and any frames after
// it go to the client, the client's early frames to the upstream.
func (h *loopHandshake) switched(resp *handshakeResponse) {
	h.stopTimer()
	h.watching = -1 // the tunnel takes the upstream's registration over
	rt, srv := h.rt, h.srv
	rt.Pool.ReportSuccess(srv)
	if c := rt.Policy.stickyCookieFor(&h.pl.req, srv, false); c != "" {
		resp.insertHeader("Set-Cookie: " + c)
	}
	h.done = true
	h.pending = false // registerTunnel takes the count over
	info := tunnelInfo{route: rt, server: srv, clientAddr: h.clientAddr, host: h.host, uri: h.uri,
		start: h.tryStart, requested: h.requested, headLen: resp.head}
	live := &relayedTunnel{placed: placed{rt, srv}}
	if !h.g.registerTunnel(live, &info) {
		h.lp.Forget(h.ufd)
		nbsys.Close(h.cfd)
		nbsys.Close(h.ufd)
		srv.Release()
		return
	}
	early := h.data[h.headLen:]
	sent := relay.Sent{Up: early, Down: resp.raw[resp.head:]}
	t := h.lp.StartTunnel(h.cfd, h.ufd, !rt.RawTunnel, sent, resp.raw, rt.metrics, h.g.relayedDone(live, info))
	rt.metrics.upgraded(h.requested)
	live.started(t)
}

// refused hands a non-101 answer to the fasthttp server, which relays it
// to the client as the goroutine path does; the upstream socket and the
// lease go with it.
func (h *loopHandshake) refused(resp *handshakeResponse) {
	h.stopTimer()
	h.unwatch()
	conn, err := h.g.connOfFD(h.ufd)
	h.ufd = -1
	if err != nil {
		h.handshakeFailed(err)
		return
	}
	conn.SetDeadline(h.tryStart.Add(h.gen.timeouts.handshake))
	h.decide(&loopDecision{refusal: resp, upstream: conn, srv: h.srv})
	h.srv = nil
}

// decide hands the conn to the fasthttp server with the outcome the loop
// reached for its first request, which the handler finishes.
func (h *loopHandshake) decide(d *loopDecision) {
	h.stopTimer()
	h.unwatch()
	d.route, d.requested, d.clientAddr = h.rt, h.requested, h.clientAddr
	h.done = true
	h.uncount()
	h.g.serveConn(h.b, h.cfd, h.data, time.Time{}, d)
}

// loopDecision is what a loop found for a handshake that did not become a
// tunnel: the upstream's refusal to relay (with its socket and the
// server's lease), or the gateway's own answer.
type loopDecision struct {
	route      *Route
	requested  time.Time
	clientAddr string

	answer *gatewayAnswer

	refusal  *handshakeResponse
	upstream net.Conn
	srv      *upstream.Server
}

// abandon releases what a decision holds when no handler will finish it
// (the conn closed first).
func (d *loopDecision) abandon() {
	if d != nil && d.upstream != nil {
		d.upstream.Close()
		d.srv.Release()
	}
}

// finishLoopHandshake answers the first request of a conn a loop handed
// over with its outcome decided, as the goroutine path would have.
func (g *Gateway) finishLoopHandshake(ctx *fasthttp.RequestCtx, cc *clientConn, d *loopDecision) {
	if !cc.handover.take() {
		return // the conn closed first and abandoned what d held
	}
	if a := d.answer; a != nil {
		g.failSince(ctx, d.route, a.upstream, a.status, a.reason, d.requested)
		if a.retryAfter {
			ctx.Response.Header.Set("Retry-After", "1")
		}
		return
	}
	defer d.upstream.Close()
	defer d.srv.Release()
	g.relayRefusal(ctx, d.route, d.srv, d.upstream, d.refusal)
}
