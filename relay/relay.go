// Package relay carries the bytes of upgraded connections (WebSocket
// tunnels, over TCP or TLS) with a few epoll event loops instead of
// goroutines.
//
// A goroutine-per-direction tunnel wakes a goroutine for every message and
// keeps two goroutine stacks per idle tunnel. Here each loop owns the file
// descriptors of its tunnels outright (duplicated from the Go conns, which
// are then closed, so Go's poller forgets them), waits for them with one
// epoll instance (itself parked in Go's poller), and moves bytes with read(2)/write(2) through one buffer per
// loop. An idle tunnel costs its small state struct and its two sockets,
// and a TLS side its crypto/tls session, which the loop reads and writes
// without waiting (tlsside.go). When a destination cannot take more bytes,
// the rest is kept in a pooled buffer of that tunnel, the source stops
// being read (backpressure) and the destination is watched for EPOLLOUT.
package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Reasons a tunnel ended, for the access log.
const (
	ClosedByClient   = "client"
	ClosedByUpstream = "upstream"
	ClosedIdle       = "idle"
	ClosedDrain      = "drain"
	// ClosedReload: a reload took the tunnel's server out of its pool and
	// the drain timeout after it passed; ended as a drain is.
	ClosedReload = "reload"
	// ClosedInternal: the relay itself failed (Stats.Err says how).
	ClosedInternal = "internal"
)

// Stats is what a tunnel did, reported once when it ends.
type Stats struct {
	Up, Down                 int64 // bytes client→upstream, upstream→client, Sent included
	UpMessages, DownMessages uint64
	// ClosedBy is the endpoint that sent the first Close frame when frames
	// are followed; otherwise the side whose connection ended first, or
	// why the relay ended the tunnel (idle, drain, reload, internal).
	ClosedBy string
	Err      error // why, when ClosedBy is ClosedInternal
	// CloseCode is the status code of the first WebSocket Close frame an
	// endpoint sent, either way (wsframe.Tracker.CloseCode): 1005 for a
	// Close without one, 0 when none was seen or frames were not
	// followed. The Close 1001 the relay itself sends on a drain is not
	// counted: it says nothing of the endpoints.
	CloseCode uint16
}

// Traffic is what a tunnel moved: bytes (Sent included) and complete
// WebSocket messages each way; messages stay 0 when frames are not
// followed.
type Traffic struct {
	Up, Down                 int64
	UpMessages, DownMessages uint64
}

// Meter is told what a tunnel moves while it lives, so that counters are
// current without the relay taking a lock or making a call per read: each
// loop adds up its tunnels' traffic itself and passes the increase since
// the previous call at most once a second per tunnel (on the loop's idle
// scan), and the rest when the tunnel ends, before its done is called.
// Moved runs on an event loop: it must be quick and never block (an
// atomic add).
type Meter interface {
	Moved(Traffic)
}

// Options configure a Relay.
type Options struct {
	// Loops is the number of event loops; 0 means DefaultLoops().
	Loops int
	// Idle closes a tunnel that moved no byte either way for this long;
	// SetIdle changes it for tunnels added later.
	Idle time.Duration
}

// Relay is a set of event loops; tunnels are spread over them.
type Relay struct {
	loops []*loop
	next  atomic.Uint32
	wg    sync.WaitGroup
	idle  atomic.Int64 // nanoseconds; read by Add and the loops
}

// ErrClosed is returned by Add after Stop.
var ErrClosed = errors.New("relay stopped")

// New starts the event loops.
func New(opts Options) (*Relay, error) {
	n := opts.Loops
	if n <= 0 {
		n = DefaultLoops()
	}
	r := &Relay{}
	r.idle.Store(int64(opts.Idle))
	for range n {
		l, err := newLoop(&r.idle)
		if err != nil {
			r.Stop()
			return nil, err
		}
		r.loops = append(r.loops, l)
		r.wg.Add(1)
		go func() { defer r.wg.Done(); l.run() }()
	}
	return r, nil
}

// DefaultLoops is half of GOMAXPROCS, at least one. On 2 cores one loop
// moved as much as two (echo, bulk) with 6-10% less CPU per handshake and
// per echo round trip. That was measured when a loop blocked its thread in
// epoll_wait, which a loop per P made worse; with loops parked in Go's
// poller (see loop) a shorter check still favoured one: 9.1 against 10.6
// µs of CPU per 64-byte echo round trip, handshakes within noise.
func DefaultLoops() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// Tunnel is a handle on a tunnel carried by the relay.
type Tunnel struct {
	l *loop
	t *tunnel
}

// Close ends the tunnel; reason goes to its Stats. With ClosedDrain or
// ClosedReload a frame-tracked tunnel says goodbye first (see CloseAll).
func (h Tunnel) Close(reason string) {
	h.l.do(func(l *loop) { l.end(h.t, reason) })
}

// Sent is what the caller relayed itself at the switch, before Add: the
// client's bytes after its handshake head (Up) and the upstream's after its
// 101 head (Down). They are the start of the tunnel's streams, so the frame
// trackers begin with them (a frame may start there and end in the relay)
// and Stats counts them.
type Sent struct{ Up, Down []byte }

// Endpoint is one side of a tunnel handed to Add: a connected TCP conn,
// and the TLS session over it when that side speaks TLS.
type Endpoint struct {
	TCP *net.TCPConn
	// TLS, when not nil, is the session over TCP, its handshake done.
	// The relay then reads and writes the side's plaintext through it on
	// its loop (see tlsside.go): frames are followed and bytes counted in
	// the plaintext, and no goroutine waits for the side.
	TLS *tls.Conn
	// Reroute is required with TLS. crypto/tls has no way to replace the
	// conn under a session, so that conn must be switchable: Add calls
	// Reroute once, after it took TCP's descriptor and before the loop
	// first uses TLS, with the conn every Read, Write, Close and deadline
	// of the conn under TLS must go to from then on. That conn reads and
	// writes the relay's descriptor without ever waiting.
	Reroute func(net.Conn)
}

// Add hands a tunnel's two sides to the relay. The relay takes their
// file descriptors and closes the Go conns; from then on the relay owns
// the sockets and closes them when the tunnel ends, and a side's TLS
// session is the loop's alone (only the loop goroutine may touch it). If
// Add fails the conns are the caller's to close (one may be closed
// already; a rerouted TLS conn's writes then fail). With frames, the
// WebSocket frames of both directions are followed, from the start of
// sent. meter, when not nil, is told the tunnel's traffic as it goes (see
// Meter). done is called once with the tunnel's stats, on the tunnel's
// loop: it must be quick and never wait, as the loop's other tunnels wait
// while it runs. A tunnel the loop cannot watch (epoll_ctl fails) ends at
// once with ClosedInternal.
func (r *Relay) Add(client, upstream Endpoint, frames bool, sent Sent, meter Meter, done func(Stats)) (Tunnel, error) {
	for _, e := range []*Endpoint{&client, &upstream} {
		if e.TLS != nil && e.Reroute == nil {
			return Tunnel{}, errors.New("relay: a TLS endpoint without Reroute")
		}
	}
	cfd, err := takeFD(client.TCP)
	if err != nil {
		return Tunnel{}, err
	}
	ufd, err := takeFD(upstream.TCP)
	if err != nil {
		unix.Close(cfd)
		return Tunnel{}, err
	}
	l := r.loops[r.next.Add(1)%uint32(len(r.loops))]
	t := newTunnel(cfd, ufd, frames, sent, time.Duration(r.idle.Load()), done)
	t.meter = meter
	// The sessions change hands here: from the caller's goroutine to the
	// loop's. Rerouting before l.do queues the tunnel makes the switch
	// happen before the loop's first use (l.do's mutex).
	t.client.setTLS(client.TLS, client.Reroute)
	t.upstream.setTLS(upstream.TLS, upstream.Reroute)
	if !l.do(func(l *loop) { l.addTunnel(t) }) {
		unix.Close(cfd)
		unix.Close(ufd)
		t.client.fd, t.upstream.fd = -1, -1 // the transports fail from now on
		return Tunnel{}, ErrClosed
	}
	return Tunnel{l: l, t: t}, nil
}

// SetIdle sets the idle timeout of the tunnels added from now on (a
// configuration reload); live tunnels keep the one they started with.
func (r *Relay) SetIdle(d time.Duration) { r.idle.Store(int64(d)) }

// CloseAll ends every tunnel with reason. With ClosedDrain, a tunnel whose
// frames are tracked gets a WebSocket Close 1001 ("going away") on each
// side that is at a frame boundary, instead of a bare TCP close that its
// endpoints would report as 1006; what they send back is read and dropped
// for up to a second while they close.
func (r *Relay) CloseAll(reason string) {
	for _, l := range r.loops {
		l.do(func(l *loop) {
			for t := range l.tunnels.All {
				l.end(t, reason)
			}
		})
	}
}

// Stop closes every tunnel and ends the loops. It returns once every
// tunnel's done was called.
func (r *Relay) Stop() {
	for _, l := range r.loops {
		l.stop()
	}
	r.wg.Wait()
}

// takeFD duplicates the conn's descriptor and closes the conn. The
// duplicate shares the socket and its open file description, so it is
// non-blocking already (Go set O_NONBLOCK there) and keeps TCP_NODELAY;
// closing the original removes it from Go's poller without closing the
// socket.
func takeFD(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(orig uintptr) {
		fd, dupErr = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, fmt.Errorf("duplicating the descriptor: %w", dupErr)
	}
	c.Close()
	return fd, nil
}
