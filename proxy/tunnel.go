package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// relayBufferSize is the size of the buffers a tunnel borrows while bytes
// move.
const relayBufferSize = 32 << 10

var relayBuffers = sync.Pool{New: func() any { b := make([]byte, relayBufferSize); return &b }}

// Closer names who ended a tunnel, for the access log.
type Closer string

// The ways a tunnel ends.
const (
	ClosedByClient   Closer = "client"
	ClosedByUpstream Closer = "upstream"
	ClosedIdle       Closer = "idle"
	ClosedDrain      Closer = "drain"
	// ClosedReload: a reload took the tunnel's server or route out, and
	// the drain timeout after it passed.
	ClosedReload Closer = "reload"
	// ClosedInternal: the gateway failed the tunnel (it could not hand it
	// to the relay, say); the error log says why.
	ClosedInternal Closer = "internal"
)

// tunnel carries the bytes of one upgraded connection in both directions
// when one side at least speaks TLS; plain TCP on both sides goes to the
// event-loop relay instead (startTunnel). It holds no buffer while both
// sides are quiet: each direction waits for readability first and borrows
// a pooled buffer only to move what arrived, so an idle tunnel is two
// parked goroutines and its two conns.
type tunnel struct {
	placed
	client, upstream net.Conn
	idle             time.Duration

	lastActive atomic.Int64 // unix nanoseconds of the last byte either way
	up, down   byteCount    // bytes client→upstream, upstream→client

	closeOnce sync.Once
	closer    atomic.Value // Closer: the first side to end, or idle/drain
	done      chan struct{}
}

func newTunnel(client, upstream net.Conn, idle time.Duration, rm *routeMetrics) *tunnel {
	t := &tunnel{client: client, upstream: upstream, idle: idle, done: make(chan struct{})}
	t.up.route, t.down.route = rm.bytesUp, rm.bytesDown
	t.touch()
	return t
}

// byteCount is one direction's byte count, also added to the route's
// counter as bytes move: one more atomic add per read, on a path that
// decrypts TLS records anyway.
type byteCount struct {
	atomic.Int64
	route prometheus.Counter
}

func (c *byteCount) add(n int64) {
	c.Add(n)
	c.route.Add(float64(n))
}

func (t *tunnel) touch() { t.lastActive.Store(time.Now().UnixNano()) }

func (t *tunnel) setCloser(c Closer) { t.closer.CompareAndSwap(nil, c) }

// run relays both directions until both end, then closes both conns.
// It returns when the tunnel is over. One direction runs on the caller's
// goroutine, so a tunnel costs two goroutines in all.
func (t *tunnel) run() {
	upDone := make(chan struct{})
	go func() { defer close(upDone); t.direction(t.client, t.upstream, &t.up, ClosedByClient) }()
	t.direction(t.upstream, t.client, &t.down, ClosedByUpstream)
	<-upDone
	t.closeBoth()
	close(t.done)
}

// abort ends the tunnel at once (drain deadline, shutdown).
func (t *tunnel) abort(why Closer) {
	t.setCloser(why)
	t.closeBoth()
}

func (t *tunnel) closeBoth() {
	t.closeOnce.Do(func() {
		t.client.Close()
		t.upstream.Close()
	})
}

// direction copies src to dst until src ends. A clean end (EOF) is passed
// on as a half-close, so the other direction keeps flowing; an error or an
// idle timeout closes both sides.
func (t *tunnel) direction(src, dst net.Conn, count *byteCount, side Closer) {
	err := t.copy(src, dst, count)
	switch {
	case err == nil:
		t.setCloser(side)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
		t.closeBoth()
	case errors.Is(err, errIdle):
		t.setCloser(ClosedIdle)
		t.closeBoth()
	case errors.As(err, new(*writeError)):
		// The far side went away while we wrote to it.
		if side == ClosedByClient {
			t.setCloser(ClosedByUpstream)
		} else {
			t.setCloser(ClosedByClient)
		}
		t.closeBoth()
	default:
		t.setCloser(side)
		t.closeBoth()
	}
}

var errIdle = errors.New("tunnel idle")

// copy moves bytes from src to dst until EOF (nil) or an error. src is a
// TCP conn, or a TLS conn over a conn whose reads can be told not to wait:
// the gateway's listeners and dialer make no other kind.
func (t *tunnel) copy(src, dst net.Conn, count *byteCount) error {
	relayOnce, err := t.relayFrom(src, dst)
	if err != nil {
		return err
	}
	if err := src.SetReadDeadline(time.Now().Add(t.idle)); err != nil {
		return err
	}
	for {
		n, err := relayOnce()
		if n > 0 {
			count.add(int64(n))
			t.touch()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if err = t.extendDeadline(src); err == nil {
					continue
				}
			}
			return err
		}
	}
}

// relayFrom returns the function that waits for src's next bytes and
// writes them to dst, each way holding no buffer while src is quiet.
func (t *tunnel) relayFrom(src, dst net.Conn) (func() (int, error), error) {
	switch src := src.(type) {
	case *net.TCPConn:
		raw, err := src.SyscallConn()
		if err != nil {
			return nil, err
		}
		return func() (int, error) { return t.waitAndRelay(raw, dst) }, nil
	case *tls.Conn:
		if pc, ok := src.NetConn().(noWaitReader); ok {
			return func() (int, error) { return t.tlsWaitAndRelay(src, pc, dst) }, nil
		}
		return nil, fmt.Errorf("tunnel: cannot relay from TLS over a %T", src.NetConn())
	}
	return nil, fmt.Errorf("tunnel: cannot relay from a %T", src)
}

// extendDeadline is called when src's read deadline passed. The deadline is
// set once per idle period rather than per read (resetting a timer on every
// message costs); if the other direction moved bytes meanwhile, the tunnel
// is not idle and the deadline moves to idle after that last byte.
func (t *tunnel) extendDeadline(src net.Conn) error {
	next := time.Unix(0, t.lastActive.Load()).Add(t.idle)
	if !next.After(time.Now()) {
		return errIdle
	}
	return src.SetReadDeadline(next)
}

// waitAndRelay waits until src is readable holding no buffer, then reads
// into a borrowed buffer and writes it all to dst. The read happens inside
// the RawConn callback; on EAGAIN the buffer goes back to the pool before
// the goroutine parks, so an idle tunnel costs two parked goroutines and
// nothing else.
func (t *tunnel) waitAndRelay(src syscall.RawConn, dst net.Conn) (int, error) {
	var buf *[]byte
	var n int
	var rerr error
	err := src.Read(func(fd uintptr) bool {
		if buf == nil {
			buf = relayBuffers.Get().(*[]byte)
		}
		for {
			n, rerr = syscall.Read(int(fd), *buf)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			relayBuffers.Put(buf)
			buf = nil
			return false
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if buf == nil {
		return 0, err
	}
	defer relayBuffers.Put(buf)
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, io.EOF
	}
	return writeAll(dst, (*buf)[:n])
}

// tlsWaitAndRelay is waitAndRelay for a TLS conn: dialed by the gateway,
// or a client's on a TLS listener.
// crypto/tls reads and decrypts a whole record into buffers of its own
// whatever the size of the caller's, so a 1-byte read parks holding no
// buffer of the tunnel's. Once it returns, the rest of that record and
// whatever else has already arrived are read without waiting into a
// borrowed buffer. An idle TLS tunnel would otherwise hold a relay buffer
// for its whole life.
func (t *tunnel) tlsWaitAndRelay(src *tls.Conn, pc noWaitReader, dst net.Conn) (int, error) {
	var first [1]byte
	n, err := src.Read(first[:])
	if n == 0 {
		return 0, err
	}
	buf := relayBuffers.Get().(*[]byte)
	defer relayBuffers.Put(buf)
	b := *buf
	b[0] = first[0]
	if err == nil {
		pc.setNoWait(true)
		for n < len(b) {
			var m int
			m, err = src.Read(b[n:])
			n += m
			if err != nil {
				break
			}
		}
		pc.setNoWait(false)
		if err == errWouldBlock {
			err = nil
		}
	}
	if _, werr := writeAll(dst, b[:n]); werr != nil {
		return n, werr
	}
	return n, err
}

// writeError is a failure to write to the destination side, so the access
// log can blame the side that went away rather than the one that spoke.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func writeAll(dst net.Conn, b []byte) (int, error) {
	n, err := dst.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return n, &writeError{err}
	}
	return n, nil
}
