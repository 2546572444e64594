package relay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/internal/nbsys"
	"github.com/wsgate/wsgate/internal/shrinkset"
	"github.com/wsgate/wsgate/wsframe"
	"golang.org/x/sys/unix"
)

// goodbyeGrace is how long a tunnel that was sent Close frames waits for
// its endpoints to close before the relay closes the sockets.
const goodbyeGrace = time.Second

// closeGoingAway is RFC 6455's status 1001: the endpoint is going away.
const closeGoingAway = 1001

// readBufferSize is the one read buffer of a loop: every read of every
// tunnel of the loop goes through it and is written out at once.
const readBufferSize = 64 << 10

// pendingBuffers hold what a destination could not take yet. They are
// borrowed only while a tunnel is backed up.
var pendingBuffers = sync.Pool{New: func() any { b := make([]byte, 0, readBufferSize); return &b }}

// loop is one event loop: a goroutine waiting on its epoll instance, the
// tunnels it owns, and a queue of commands other goroutines hand it through
// an eventfd.
//
// The goroutine does not block in epoll_wait: the epoll descriptor is itself
// watched by Go's poller (it is readable while events are ready), so the
// goroutine parks like one waiting for a socket, and epoll_wait is called
// only with a zero timeout. A thread blocked in epoll_wait kept the
// runtime's monitor waking every 20 µs or so to take its P back and hand
// the P to another thread: under a handshake load that was 9 nanosleeps
// and 3 futex calls per handshake in the gateway.
type loop struct {
	epfd, wakefd int
	// epoll is epfd as a file of Go's poller: the loop waits for it to
	// be readable, until a read deadline that is the next scan.
	epoll     *os.File
	epollRC   syscall.RawConn
	pollReady func(uintptr) bool // l.readyEvents
	idle      *atomic.Int64      // the relay's idle timeout for new tunnels (SetIdle)

	mu      sync.Mutex
	queue   []func(*loop)
	stopped bool

	// Owned by the loop goroutine.
	events  []unix.EpollEvent // filled by readyEvents, with ready and pollErr
	ready   int
	pollErr error
	sides   []*side // by file descriptor
	// watchers are the descriptors watched for others (Loop.Watch), by
	// descriptor; timers are their timers (Loop.AfterFunc).
	watchers []watch
	timers   timerHeap
	// seq numbers every registration with epoll, carried in the event's
	// data beside the descriptor. A descriptor closed while handling one
	// event of a batch may be reused before a later event of the same
	// batch (a socket accepted or dialed on the loop): the stale event
	// carries the old number and is dropped.
	seq     int32
	tunnels *shrinkset.Set[*tunnel]
	closing int     // tunnels saying goodbye: the loop then scans often
	again   []*side // TLS sides to read without waiting for epoll (readSoon)
	buf     []byte
	now     int64 // unix nanoseconds, read once per wakeup
}

func newLoop(idle *atomic.Int64) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		nbsys.Close(epfd)
		return nil, err
	}
	if err := nbsys.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		nbsys.Close(epfd)
		nbsys.Close(wakefd)
		return nil, err
	}
	// Non-blocking, os.NewFile registers it with Go's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		nbsys.Close(epfd)
		nbsys.Close(wakefd)
		return nil, err
	}
	epoll := os.NewFile(uintptr(epfd), "relay epoll")
	rc, err := epoll.SyscallConn()
	if err != nil {
		epoll.Close()
		nbsys.Close(wakefd)
		return nil, err
	}
	l := &loop{
		epfd: epfd, wakefd: wakefd, epoll: epoll, epollRC: rc, idle: idle,
		events:  make([]unix.EpollEvent, 256),
		tunnels: shrinkset.New[*tunnel](),
		buf:     make([]byte, readBufferSize),
	}
	l.pollReady = l.readyEvents
	return l, nil
}

// do queues fn to run on the loop goroutine; false if the loop stopped.
func (l *loop) do(fn func(*loop)) bool {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false
	}
	wake := len(l.queue) == 0
	l.queue = append(l.queue, fn)
	l.mu.Unlock()
	if wake {
		var one = [8]byte{1}
		nbsys.Write(l.wakefd, one[:])
	}
	return true
}

func (l *loop) stop() {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	l.queue = append(l.queue, func(l *loop) { l.closeAll(ClosedDrain) })
	l.stopped = true
	l.mu.Unlock()
	var one = [8]byte{1}
	nbsys.Write(l.wakefd, one[:])
}

func (l *loop) run() {
	nextScan := time.Now().Add(l.scanEvery()).UnixNano()
	var armed int64 // the read deadline set on l.epoll
	for {
		scanEvery := l.scanEvery()
		if l.closing > 0 {
			nextScan = min(nextScan, time.Now().Add(goodbyeGrace/10).UnixNano())
		}
		wake := nextScan
		if len(l.timers) > 0 {
			wake = min(wake, l.timers[0].at)
		}
		if armed != wake {
			l.epoll.SetReadDeadline(time.Unix(0, wake))
			armed = wake
		}
		n := l.wait()
		l.now = time.Now().UnixNano()
		woken := false
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			fd := int(ev.Fd)
			switch {
			case fd == l.wakefd:
				woken = true
			case fd < len(l.sides) && l.sides[fd] != nil:
				if s := l.sides[fd]; s.seq == ev.Pad {
					l.handle(s, ev.Events)
				}
			case fd < len(l.watchers) && l.watchers[fd].w != nil:
				if w := l.watchers[fd]; w.seq == ev.Pad {
					w.w.Ready(Loop{l}, ev.Events)
				}
			}
		}
		// Commands run after the batch: a tunnel added now may reuse the
		// descriptor number of one closed in this batch, and must not
		// receive that one's stale events.
		if woken && l.runQueue() {
			l.shutdown()
			return
		}
		l.readAgain()
		l.runTimers()
		if l.now >= nextScan {
			l.scan()
			l.shrinkSides()
			nextScan = l.now + int64(scanEvery)
		}
	}
}

// wait fills l.events with the ready events and returns their number,
// waiting for some until the read deadline of l.epoll (0 events then).
func (l *loop) wait() int {
	if len(l.again) > 0 {
		// TLS sides are to be read at once: only look.
		l.readyEvents(uintptr(l.epfd))
		if l.pollErr != nil {
			panic("relay: epoll_wait: " + l.pollErr.Error())
		}
		return l.ready
	}
	// RawConn.Read calls pollReady until it returns true, parking the
	// goroutine in Go's poller for readability in between.
	rerr := l.epollRC.Read(l.pollReady)
	switch {
	case errors.Is(rerr, os.ErrDeadlineExceeded):
		return 0
	case rerr != nil:
		panic("relay: waiting for epoll: " + rerr.Error())
	case l.pollErr != nil:
		panic("relay: epoll_wait: " + l.pollErr.Error())
	}
	return l.ready
}

// readyEvents is an epoll_wait that does not wait: false when no event
// is ready. It is l.pollReady, a method value made once: a closure per
// wait would be an allocation per wakeup.
func (l *loop) readyEvents(fd uintptr) bool {
	for {
		l.ready, l.pollErr = nbsys.EpollPoll(int(fd), l.events)
		if l.pollErr != unix.EINTR {
			return l.ready > 0 || l.pollErr != nil
		}
	}
}

// runQueue runs the queued commands; it reports whether the loop stops.
func (l *loop) runQueue() bool {
	var b [8]byte
	nbsys.Read(l.wakefd, b[:])
	l.mu.Lock()
	queue, stopped := l.queue, l.stopped
	l.queue = nil
	l.mu.Unlock()
	for _, fn := range queue {
		fn(l)
	}
	return stopped
}

func (l *loop) shutdown() {
	l.closeAll(ClosedDrain)
	l.closeWatchers()
	nbsys.Close(l.wakefd)
	l.epoll.Close()
}

// idleTimeout is the idle timeout of a tunnel added now.
func (l *loop) idleTimeout() time.Duration { return time.Duration(l.idle.Load()) }

func (l *loop) addTunnel(t *tunnel) {
	t.lastActive = time.Now().UnixNano()
	for _, s := range []*side{&t.client, &t.upstream} {
		for s.fd >= len(l.sides) {
			l.sides = append(l.sides, make([]*side, len(l.sides)+64)...)
		}
		l.sides[s.fd] = s
		s.events, s.watched, s.seq = unix.EPOLLIN|unix.EPOLLRDHUP, true, l.nextSeq()
		op := unix.EPOLL_CTL_ADD
		if s.fd < len(l.watchers) && l.watchers[s.fd].w != nil {
			// Watched for a Watcher that hands it over (StartTunnel): one
			// change of the registration instead of a removal and an add.
			l.watchers[s.fd] = watch{}
			op = unix.EPOLL_CTL_MOD
		}
		if err := nbsys.EpollCtl(l.epfd, op, s.fd, &unix.EpollEvent{Events: s.events, Fd: int32(s.fd), Pad: s.seq}); err != nil {
			// The endpoints did nothing wrong: the loop cannot carry it.
			t.err = fmt.Errorf("watching the %s socket: epoll_ctl: %w", s.name, err)
			l.tunnels.Add(t)
			l.closeTunnel(t, ClosedInternal)
			return
		}
	}
	l.tunnels.Add(t)
	// A TLS session may have read past its handshake, or past the
	// upstream's 101, into bytes the socket no longer holds.
	l.readSoon(&t.client)
	l.readSoon(&t.upstream)
}

// handle reacts to the events of one side.
func (l *loop) handle(s *side, events uint32) {
	t := s.t
	if events&unix.EPOLLOUT != 0 && len(s.pending) > 0 {
		l.flush(s)
	}
	if t.closed {
		return
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		switch {
		case s.wantsRead():
			l.readFrom(s)
		case events&unix.EPOLLERR != 0 || s.readDone:
			// Not reading this side and it failed, or it ended both ways:
			// bytes can no longer reach it or come from it.
			l.closeTunnel(t, s.name)
		case events&unix.EPOLLHUP != 0:
			// Backed up, and hung up both ways (the endpoint half-closed
			// after the gateway did): its last bytes still wait in the
			// socket and are read once the peer takes what it owes. The
			// hang-up would be reported on every wait until then.
			l.unwatch(s)
		}
	}
}

// readFrom moves one read's worth of bytes from s to its peer.
func (l *loop) readFrom(s *side) {
	if s.tls != nil {
		l.readTLS(s)
		return
	}
	t := s.t
	n, err := nbsys.Read(s.fd, l.buf)
	switch {
	case n > 0:
		if t.closing {
			return // Close frames are out: the rest is dropped
		}
		t.lastActive = l.now
		s.read += int64(n)
		s.track(l.buf[:n])
		l.writeTo(s.peer, l.buf[:n])
	case n == 0 && t.closing:
		s.readDone = true
		if s.peer.readDone {
			l.closeTunnel(t, ClosedDrain)
		} else {
			l.unwatch(s)
		}
	case n == 0:
		l.readEOF(s)
	case err == unix.EAGAIN || err == unix.EINTR:
	default:
		l.closeTunnel(t, s.name)
	}
}

// readEOF passes a half-close on: the peer's write side is shut down, so
// it reads EOF too.
func (l *loop) readEOF(s *side) {
	t := s.t
	s.readDone = true
	if t.closedBy == "" {
		t.closedBy = s.name
	}
	if s.peer.readDone || s.closingHandshakeDone() {
		l.closeTunnel(t, t.closedBy)
		return
	}
	// s was read, so its peer owed nothing (wantsRead): shut it now, after
	// a close_notify if it speaks TLS (shutWrite waits if that cannot all
	// be written at once).
	l.shutWrite(s.peer)
	l.setInterest(s)
}

// writeTo writes b to s; what s cannot take now waits in s.pending, and
// s's peer is not read until it is written.
func (l *loop) writeTo(s *side, b []byte) {
	if s.tls != nil {
		l.writeTLS(s, b)
		return
	}
	w, err := nbsys.Write(s.fd, b)
	if err != nil {
		if err != unix.EAGAIN && err != unix.EINTR {
			l.closeTunnel(s.t, s.name)
			return
		}
		w = 0
	}
	if w == len(b) {
		return
	}
	p := pendingBuffers.Get().(*[]byte)
	s.pendingBuf = p
	s.pending = append((*p)[:0], b[w:]...)
	l.setInterest(s)
	l.setInterest(s.peer)
}

// flush writes what s owes; when it is all written, s's peer is read again.
func (l *loop) flush(s *side) {
	w, err := nbsys.Write(s.fd, s.pending)
	if err != nil {
		if err != unix.EAGAIN && err != unix.EINTR {
			l.closeTunnel(s.t, s.name)
		}
		return
	}
	s.pending = s.pending[w:]
	if len(s.pending) > 0 {
		return
	}
	s.releasePending()
	l.flushed(s)
	l.setInterest(s)
	l.setInterest(s.peer)
}

// setInterest tells epoll what s waits for now.
func (l *loop) setInterest(s *side) {
	var want uint32
	if s.wantsRead() {
		want |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if len(s.pending) > 0 {
		want |= unix.EPOLLOUT
	}
	if want == s.events {
		return
	}
	op := unix.EPOLL_CTL_MOD
	if !s.watched {
		if want == 0 {
			return
		}
		op, s.watched = unix.EPOLL_CTL_ADD, true
	}
	s.events = want
	if err := nbsys.EpollCtl(l.epfd, op, s.fd, &unix.EpollEvent{Events: want, Fd: int32(s.fd), Pad: s.seq}); err != nil {
		l.closeTunnel(s.t, s.name)
	}
}

// scanEvery is how often epoll_wait wakes at least to find idle tunnels
// and publish traffic: every second, or four times per idle timeout when
// that is shorter. A
// tunnel added before SetIdle lengthened the timeout is still found, a
// little late at worst.
func (l *loop) scanEvery() time.Duration {
	if idle := time.Duration(l.idle.Load()); idle > 0 && idle < 4*time.Second {
		return idle / 4
	}
	return time.Second
}

// scan publishes the traffic of every tunnel (see Meter) and closes the
// tunnels idle for too long, and those whose goodbye grace is over.
func (l *loop) scan() {
	for t := range l.tunnels.All {
		t.publish()
		switch {
		case t.closing && l.now >= t.closeAt:
			l.closeTunnel(t, ClosedDrain)
		case t.idle > 0 && t.lastActive < l.now-t.idle:
			l.closeTunnel(t, ClosedIdle)
		}
	}
}

// shrinkSides gives back the descriptor table once the loop's tunnels use
// a small part of it: after a mass disconnect it would otherwise stay sized
// for the highest descriptor the process ever had.
func (l *loop) shrinkSides() {
	if len(l.sides) < 1024 || 8*l.tunnels.Len() > len(l.sides) {
		return
	}
	top := -1
	for t := range l.tunnels.All {
		top = max(top, t.client.fd, t.upstream.fd)
	}
	if top+1 > len(l.sides)/2 {
		return
	}
	sides := make([]*side, top+1+64)
	copy(sides, l.sides)
	l.sides = sides
}

// end ends a tunnel for reason: with ClosedDrain or ClosedReload a
// goodbye if its frames are tracked, otherwise a close.
func (l *loop) end(t *tunnel, reason string) {
	if (reason == ClosedDrain || reason == ClosedReload) && (t.client.tracking || t.upstream.tracking) {
		l.goodbye(t, reason)
		return
	}
	l.closeTunnel(t, reason)
}

// goodbye sends Close 1001 to each side it may be injected into (nothing
// owed to it, and the stream towards it at a frame boundary), shuts the
// write side of both, and leaves the tunnel to end when both endpoints
// close or the grace is over.
func (l *loop) goodbye(t *tunnel, reason string) {
	if t.closed || t.closing {
		return
	}
	if t.closedBy == "" {
		t.closedBy = reason
	}
	t.closing = true
	l.closing++
	t.closeAt = l.now + int64(goodbyeGrace)
	var frame [8]byte
	for _, s := range []*side{&t.client, &t.upstream} {
		if s.canSendClose() {
			// The gateway is the client of the upstream, so frames to it
			// are masked (RFC 6455 5.3) with an unpredictable key.
			toUpstream := s == &t.upstream
			var key [4]byte
			if toUpstream {
				k := rand.Uint32()
				key = [4]byte{byte(k), byte(k >> 8), byte(k >> 16), byte(k >> 24)}
			}
			l.sendFrame(s, wsframe.AppendClose(frame[:0], closeGoingAway, "", toUpstream, key))
		} else if len(s.pending) > 0 {
			l.dropPending(s)
		}
		l.shutWrite(s)
	}
	if t.client.readDone && t.upstream.readDone {
		l.closeTunnel(t, ClosedDrain)
		return
	}
	for _, s := range []*side{&t.client, &t.upstream} {
		if s.readDone && len(s.pending) == 0 {
			l.unwatch(s)
		} else {
			l.setInterest(s)
		}
	}
}

// unwatch stops watching a side that is hung up (ended both ways) but must
// outlive its hang-up: epoll would report it on every wait. setInterest
// watches it again when there is something to wait for.
func (l *loop) unwatch(s *side) {
	s.events, s.watched = 0, false
	nbsys.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
}

// closeAll closes every tunnel at once (the relay is stopping).
func (l *loop) closeAll(reason string) {
	for t := range l.tunnels.All {
		l.closeTunnel(t, reason)
	}
}

// closeTunnel closes both sockets and reports the stats. The first reason
// wins: a tunnel half-closed by the upstream and then ended by the idle
// timeout was closed by the upstream.
func (l *loop) closeTunnel(t *tunnel, reason string) {
	if t.closed {
		return
	}
	t.closed = true
	if t.closing {
		l.closing--
	}
	if t.closedBy == "" {
		t.closedBy = reason
	}
	for _, s := range []*side{&t.client, &t.upstream} {
		if s.fd < len(l.sides) && l.sides[s.fd] == s {
			l.sides[s.fd] = nil
		}
		// close(2) also removes the descriptor from epoll: the relay holds
		// the only reference to the socket.
		nbsys.Close(s.fd)
		s.releasePending()
	}
	l.tunnels.Delete(t)
	t.publish()
	if t.done != nil {
		// On the loop: done must be quick and never wait (the gateway's
		// takes its lock for an instant and queues a log line). Handing
		// it to another goroutine cost a wake-up of a second thread per
		// tunnel, a tenth of a handshake's CPU.
		t.done(t.stats())
	}
}
