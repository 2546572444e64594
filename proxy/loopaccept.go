package proxy

import (
	"github.com/wsgate/wsgate/internal/nbsys"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/relay"
	"golang.org/x/sys/unix"
)

// acceptBatch bounds the connections one wakeup of a loop accepts, so a
// flood on one socket does not starve the tunnels of that loop.
const acceptBatch = 64

// loopAcceptor accepts the connections of one listening socket on the
// relay's event loops. Each loop watches the socket (EPOLLEXCLUSIVE: one
// loop is woken per connection) through a loopAccept of its own.
//
// A connection on a plain listener starts its handshake on the loop that
// accepted it (loopHandshake); one on a TLS listener, or one that
// redirects to HTTPS, goes to the fasthttp server at once (serveConn),
// since its TLS handshake runs on a goroutine.
type loopAcceptor struct {
	g  *Gateway
	b  *boundListener
	fd int // the listening socket, owned by b.ln

	// The current run of failed accepts, shared by the loops: it is logged
	// once, not once per loop and retry. inRun says whether one is on,
	// read by every accept without the lock.
	inRun        atomic.Bool
	mu           sync.Mutex
	failures     int
	firstFailure time.Time
	lastFailure  time.Time
}

// loopAccept is a loopAcceptor on one loop; only that loop uses it.
type loopAccept struct {
	*loopAcceptor
	wait   time.Duration // before watching again after running out of descriptors
	paused bool
}

// watchListener starts accepting b's connections on every loop.
func (g *Gateway) watchListener(b *boundListener) error {
	tcp, ok := b.ln.(*net.TCPListener)
	if !ok {
		return &net.OpError{Op: "accept", Net: "tcp", Addr: b.ln.Addr(), Err: errNotTCP}
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	a := &loopAcceptor{g: g, b: b, fd: fd}
	var werr error
	g.relay.EachLoop(func(lp relay.Loop) {
		if err := lp.Watch(fd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE, &loopAccept{loopAcceptor: a}); err != nil {
			werr = err
		}
	})
	if werr != nil {
		a.forget()
		return werr
	}
	b.acceptor = a
	return nil
}

var errNotTCP = os.NewSyscallError("accept", unix.ENOTSOCK)

// forget stops every loop from watching the socket; it returns once none
// does, so the socket can be closed.
func (a *loopAcceptor) forget() {
	a.g.relay.EachLoop(func(lp relay.Loop) { lp.Forget(a.fd) })
}

// Ready accepts what is waiting, up to acceptBatch connections.
func (a *loopAccept) Ready(lp relay.Loop, _ uint32) {
	for i := range acceptBatch {
		// Not x/sys/unix's accept4, which asks every socket for its
		// protocol (a getsockopt) to tell L2TP addresses apart.
		fd, sa, err := nbsys.Accept4(a.fd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		switch {
		case err == nil:
			a.wait = 0
			a.accepted(lp, fd, sa)
		case err == syscall.EAGAIN:
			return
		case err == syscall.EINTR:
		case i > 0 && isLocalResourceError(err):
			// Linux takes the descriptor before it looks at the queue:
			// after the connection that took the last one, this says
			// nothing of a connection waiting. If one does, epoll
			// reports the socket again and the next accept tells.
			return
		default:
			a.acceptFailed(lp, err)
			return
		}
	}
}

// Close: the listening socket is b's to close.
func (a *loopAccept) Close() {}

// accepted starts serving a connection: a handshake on this loop for a
// plain listener, the fasthttp server otherwise.
func (a *loopAccept) accepted(lp relay.Loop, fd int, sa syscall.Sockaddr) {
	if a.inRun.Load() {
		a.noteSuccess()
	}
	gen := a.g.gen.Load()
	li := gen.listener(a.b)
	if li == nil {
		li = a.b.info.Load() // a reload removed it just now
	}
	if li.tls != nil || li.redirectHTTPS {
		a.g.serveConn(a.b, fd, nil, time.Time{}, nil)
		return
	}
	startLoopHandshake(a.g, lp, a.b, gen, li, fd, sa)
}

// acceptFailed handles a failed accept(2). Failures that pass (see
// isPassingAcceptError) are logged once per run; running out of
// descriptors or memory stops this loop watching the socket for a wait
// that doubles from 5 ms to 1 s, as net/http's Serve does, while the
// connections wait in the listen queue. Any other failure means the
// socket is closed: the loop stops watching it.
func (a *loopAccept) acceptFailed(lp relay.Loop, err error) {
	if !isPassingAcceptError(err) {
		lp.Forget(a.fd)
		return
	}
	a.noteFailure(os.NewSyscallError("accept", err))
	if !isLocalResourceError(err) {
		return
	}
	lp.Forget(a.fd)
	a.wait = min(max(2*a.wait, acceptRetryFirst), acceptRetryMax)
	lp.AfterFunc(lp.Now()+int64(a.wait), func() {
		select {
		case <-a.b.closed:
			return // the socket is being closed: watching it could watch its successor
		default:
		}
		if err := lp.Watch(a.fd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE, a); err != nil {
			a.g.errorf("accept on %s: watching the socket again: %v", a.b.ln.Addr(), err)
		}
	})
}

// noteFailure counts a failed accept; the first of a run is logged.
func (a *loopAcceptor) noteFailure(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if a.failures > 0 && now.Sub(a.lastFailure) > acceptRunGap {
		a.endRun()
	}
	if a.failures == 0 {
		a.firstFailure = now
		a.g.errorf("accept on %s: %v; retrying, at least every %v: new connections wait in the listen queue until it passes",
			a.b.ln.Addr(), err, acceptRetryMax)
	}
	a.failures++
	a.lastFailure = now
	a.inRun.Store(true)
}

// noteSuccess ends a run of failed accepts once an accept came
// acceptRunGap after its last failure.
func (a *loopAcceptor) noteSuccess() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failures > 0 && time.Since(a.lastFailure) > acceptRunGap {
		a.endRun()
	}
}

// endRun logs the end of a run of failed accepts. a.mu is held.
func (a *loopAcceptor) endRun() {
	a.g.errorf("accept on %s: accepting connections again; %d accepts failed over %v, the last at %s",
		a.b.ln.Addr(), a.failures, a.lastFailure.Sub(a.firstFailure).Round(time.Millisecond), a.lastFailure.Format(time.TimeOnly))
	a.failures = 0
	a.inRun.Store(false)
}

// serveConn hands a connection a loop accepted to the fasthttp server
// serving its socket: replay is what the loop already read of it, which
// the server reads first; headBy, when set, is when the first request head
// was due (the loop's wait counts against timeouts.handshake); decided,
// when set, is what the loop found for that request. The socket becomes a
// Go conn here (a duplicate of fd, which is closed); from then on it is the
// server's, or closed when the listener closes first.
func (g *Gateway) serveConn(b *boundListener, fd int, replay []byte, headBy time.Time, decided *loopDecision) {
	c, err := g.connOfFD(fd)
	if err != nil {
		g.errorf("listener %s: handing a connection to the HTTP server: %v", b.ln.Addr(), err)
		decided.abandon()
		return
	}
	cc := &clientConn{tcpConn: newTCPConn(c.(*net.TCPConn)), write: idleDeadline{idle: g.gen.Load().timeouts.idle}}
	cc.replay, cc.headBy, cc.decided = replay, headBy, decided
	if !headBy.IsZero() {
		cc.headByUses = firstHeadDeadlines
	}
	if decided != nil {
		cc.handover.hold(decided.abandon)
	}
	conn := g.wrapClient(b, cc)
	go func() {
		select {
		case b.conns <- conn:
		case <-b.closed:
			conn.Close()
		}
	}()
}

// connOfFD makes a Go conn of a socket a loop owned. Go makes it of a
// duplicate of fd, which the spare descriptor lets through when none is
// left; fd itself is closed, whatever the outcome.
func (g *Gateway) connOfFD(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	var c net.Conn
	err := g.spare.with(func() error {
		var err error
		c, err = net.FileConn(f)
		return err
	})
	f.Close()
	g.spare.refill() // the descriptor just closed is free for it
	return c, err
}

// addrOf returns a socket address as the gateway writes it: IP and
// IP:port, an IPv4-mapped IPv6 address as IPv4 (as net does).
func addrOf(sa syscall.Sockaddr) (ip, ipPort string) {
	var ap netip.AddrPort
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *syscall.SockaddrInet6:
		ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	default:
		return "-", "-"
	}
	return ap.Addr().String(), ap.String()
}
