package relay

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"time"

	"github.com/wsgate/wsgate/internal/nbsys"
	"golang.org/x/sys/unix"
)

// A TLS side is carried by its loop as a TCP side is, with crypto/tls
// between the socket and the relay:
//
//   - Reads: crypto/tls treats a read error whose Temporary() is true as
//     "try again": the session is not failed, and a partial record stays
//     in its buffer for the next read. The conn under the session is
//     switched to a transport on the loop's descriptor (Endpoint.Reroute)
//     whose reads return errWouldBlock instead of waiting, so on EPOLLIN
//     the loop calls tls.Conn.Read until that error comes back.
//   - Writes: crypto/tls fails a session for good on any write error, so
//     the transport never returns EAGAIN: what the socket does not take
//     is kept in the side's pending buffer, and the relay's backpressure
//     (EPOLLOUT, the peer not read meanwhile) applies as for TCP. pending
//     holds ciphertext then. crypto/tls may write from within a Read (the
//     answer to a KeyUpdate): it goes through the same transport, behind
//     what pending already holds.
//   - epoll knows the socket only: bytes crypto/tls already took from it
//     (a decrypted record not yet read out, or records read in one go)
//     raise no event. So a read goes on until the socket is empty, and a
//     side whose reading stopped short (the loop's buffer was full, or
//     the peer backed up) is read again without waiting for epoll
//     (readSoon), as is a side just added (the handshake may have read
//     past its end).
//
// The handshake is done before Add, on the caller's goroutine; from Add on
// only the loop goroutine touches the session (see Relay.Add).

// errWouldBlock is the transport's read that found the socket empty: a
// temporary net.Error, which crypto/tls takes for "try again later".
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "relay: read would block" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

// tlsTransport is the conn under a TLS side's session once the relay
// carries it: the side's descriptor, read and written without waiting.
// It is the side itself under another method set, so it costs nothing.
type tlsTransport side

// setTLS makes c the side's session and reroutes the conn under it to the
// side's transport. Nothing when c is nil (a TCP side).
func (s *side) setTLS(c *tls.Conn, reroute func(net.Conn)) {
	if c == nil {
		return
	}
	s.tls = c
	reroute((*tlsTransport)(s))
}

// Read reads what the socket holds: io.EOF at its end, errWouldBlock when
// it holds nothing.
func (c *tlsTransport) Read(p []byte) (int, error) {
	if c.fd < 0 {
		return 0, net.ErrClosed
	}
	for {
		n, err := nbsys.Read(c.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, errWouldBlock
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes what the socket takes and keeps the rest in pending, after
// what pending holds already; it fails only when the socket failed or the
// write side was shut.
func (c *tlsTransport) Write(p []byte) (int, error) {
	s := (*side)(c)
	if s.fd < 0 || s.writeShut {
		return 0, net.ErrClosed
	}
	if len(s.pending) > 0 {
		s.pending = append(s.pending, p...)
		return len(p), nil
	}
	w := 0
	for w < len(p) {
		n, err := nbsys.Write(s.fd, p[w:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			return 0, os.NewSyscallError("write", err)
		}
		w += n
	}
	if w < len(p) {
		s.pendingBuf = pendingBuffers.Get().(*[]byte)
		s.pending = append((*s.pendingBuf)[:0], p[w:]...)
	}
	return len(p), nil
}

// Close does nothing: the loop closes the descriptor when the tunnel ends.
func (c *tlsTransport) Close() error { return nil }

// LocalAddr is nil: the relay keeps no addresses, and nothing asks a
// session for them once the relay has it.
func (c *tlsTransport) LocalAddr() net.Addr { return nil }

// RemoteAddr is nil, as LocalAddr.
func (c *tlsTransport) RemoteAddr() net.Addr { return nil }

// SetDeadline does nothing: the transport never waits. (crypto/tls sets
// write deadlines around a close_notify.)
func (c *tlsTransport) SetDeadline(time.Time) error { return nil }

// SetReadDeadline does nothing, as SetDeadline.
func (c *tlsTransport) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline does nothing, as SetDeadline.
func (c *tlsTransport) SetWriteDeadline(time.Time) error { return nil }

// readTLS moves the plaintext a TLS side has, up to one buffer, to its
// peer, then passes on the end of its stream or its failure.
func (l *loop) readTLS(s *side) {
	t := s.t
	n := 0
	var err error
	for n < len(l.buf) {
		var m int
		m, err = s.tls.Read(l.buf[n:])
		n += m
		if err != nil {
			break
		}
	}
	l.watchWrites(s) // the session may have answered something
	if t.closed {
		return
	}
	if n > 0 && !t.closing {
		t.lastActive = l.now
		s.read += int64(n)
		s.track(l.buf[:n])
		l.writeTo(s.peer, l.buf[:n])
		if t.closed {
			return
		}
	}
	switch {
	case err == nil:
		// The buffer is full: the session may hold more than the socket.
		l.readSoon(s)
	case err == errWouldBlock:
	case err == io.EOF && t.closing:
		s.readDone = true
		if s.peer.readDone {
			l.closeTunnel(t, ClosedDrain)
		} else {
			l.unwatch(s)
		}
	case err == io.EOF && len(s.peer.pending) > 0:
		// The end is passed on once the peer took what it is owed:
		// crypto/tls returns io.EOF again on the next read (readSoon
		// after the flush).
	case err == io.EOF:
		l.readEOF(s)
	default:
		// A broken record, an alert, or the socket failed.
		l.closeTunnel(t, s.name)
	}
}

// writeTLS encrypts b to s; what the socket does not take waits in
// s.pending, and s's peer is not read until it is written.
func (l *loop) writeTLS(s *side, b []byte) {
	if _, err := s.tls.Write(b); err != nil {
		l.closeTunnel(s.t, s.name)
		return
	}
	l.watchWrites(s)
}

// watchWrites watches s for EPOLLOUT, and stops reading its peer, when the
// transport kept bytes for s.
func (l *loop) watchWrites(s *side) {
	if len(s.pending) > 0 && s.events&unix.EPOLLOUT == 0 && !s.t.closed {
		l.setInterest(s)
		l.setInterest(s.peer)
	}
}

// sendFrame writes a frame the relay makes itself (a drain's Close) to s,
// encrypted for a TLS side. A TCP side gets what the socket takes at once.
func (l *loop) sendFrame(s *side, frame []byte) {
	if s.tls != nil {
		s.tls.Write(frame) // a failure shows on the next read or flush
		return
	}
	nbsys.Write(s.fd, frame)
}

// dropPending gives up what s is owed (a drain) and shuts its write side:
// a TLS record may have been cut there, so no close_notify follows.
func (l *loop) dropPending(s *side) {
	s.releasePending()
	nbsys.Shutdown(s.fd, unix.SHUT_WR)
	s.writeShut = true
}

// shutWrite ends the stream to s: a TLS side gets its close_notify first,
// and the shutdown waits until s took what it is owed.
func (l *loop) shutWrite(s *side) {
	if s.writeShut || s.shutPending {
		return
	}
	if s.tls != nil {
		s.tls.CloseWrite() // a failure: the shutdown goes ahead anyway
	}
	if len(s.pending) > 0 {
		s.shutPending = true
		l.watchWrites(s)
		return
	}
	nbsys.Shutdown(s.fd, unix.SHUT_WR)
	s.writeShut = true
}

// flushed is called when s took everything it was owed: a shutdown that
// waited for it goes ahead, and a TLS peer, read again from now on, may
// hold bytes no epoll event will announce.
func (l *loop) flushed(s *side) {
	if s.shutPending {
		s.shutPending = false
		nbsys.Shutdown(s.fd, unix.SHUT_WR)
		s.writeShut = true
	}
	l.readSoon(s.peer)
}

// readSoon queues a TLS side to be read after the current batch of
// events, without waiting for epoll (see wait).
func (l *loop) readSoon(s *side) {
	if s.tls == nil || s.again {
		return
	}
	s.again = true
	l.again = append(l.again, s)
}

// readAgain reads the sides queued by readSoon that may be read now. A
// side queued again meanwhile waits for the next round, so one busy side
// cannot hold the loop.
func (l *loop) readAgain() {
	n := len(l.again)
	if n == 0 {
		return
	}
	for i := 0; i < n; i++ {
		s := l.again[i]
		s.again = false
		if !s.t.closed && s.wantsRead() {
			l.readTLS(s)
		}
	}
	rest := copy(l.again, l.again[n:])
	clear(l.again[rest:])
	l.again = l.again[:rest]
}
