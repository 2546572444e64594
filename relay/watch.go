package relay

import (
	"container/heap"
	"sync"

	"github.com/wsgate/wsgate/internal/nbsys"
	"golang.org/x/sys/unix"
)

// Loop is a handle on one event loop for code that runs on it: a Watcher's
// Ready, a Timer's function, or a function passed to Post or EachLoop. Its
// methods other than Post must be called on the loop's goroutine only.
//
// It lets a caller own sockets of its own on the loop (a listening socket,
// a connection whose WebSocket handshake is still going on) and turn them
// into a tunnel there, with no goroutine in between.
type Loop struct{ l *loop }

// Watcher is told when a descriptor it watches on a loop is ready. Ready
// runs on the loop goroutine and must not block. Close is called when the
// loop stops while the watcher still watches a descriptor, once for each:
// the watcher releases what it holds (closes its descriptors, gives back
// what it took), and a second call does nothing.
type Watcher interface {
	Ready(lp Loop, events uint32)
	Close()
}

// watch is a descriptor watched for a Watcher. seq tells its events from
// those of a descriptor that had the same number before it (see loop.seq).
type watch struct {
	w   Watcher
	seq int32
}

// Watch starts watching fd for events (EPOLLIN, EPOLLOUT, EPOLLEXCLUSIVE...)
// on behalf of w. The descriptor stays the caller's: Forget it before
// closing it.
func (lp Loop) Watch(fd int, events uint32, w Watcher) error {
	l := lp.l
	for fd >= len(l.watchers) {
		l.watchers = append(l.watchers, make([]watch, len(l.watchers)+64)...)
	}
	seq := l.nextSeq()
	if err := nbsys.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd), Pad: seq}); err != nil {
		return err
	}
	l.watchers[fd] = watch{w: w, seq: seq}
	return nil
}

// Forget stops watching fd; the descriptor stays open.
func (lp Loop) Forget(fd int) {
	l := lp.l
	if fd < len(l.watchers) && l.watchers[fd].w != nil {
		nbsys.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		l.watchers[fd] = watch{}
	}
}

// Now is the time the loop woke, in unix nanoseconds.
func (lp Loop) Now() int64 { return lp.l.now }

// Buffer is the loop's read buffer: it may be read into and used until the
// function running on the loop returns, then it is the next one's.
func (lp Loop) Buffer() []byte { return lp.l.buf }

// Post queues fn to run on the loop; false if the loop has stopped, and fn
// will not run. It may be called from any goroutine.
func (lp Loop) Post(fn func(Loop)) bool {
	return lp.l.do(func(l *loop) { fn(Loop{l}) })
}

// StartTunnel makes a tunnel of two connected, non-blocking TCP sockets the
// caller owns on this loop, as Relay.Add does for Go conns: the loop owns
// them from here on and closes them when the tunnel ends. A socket still
// watched for a Watcher is taken over from it: the Watcher hears no more
// of it. toClient is written to the client first, then sent.Up to the
// upstream; toClient must end with sent.Down (the bytes before it, the
// upstream's 101 head, are neither tracked nor counted). A write the socket
// cannot take at once waits in the tunnel like any other. done is called
// once with the tunnel's stats, on the loop (see Relay.Add).
func (lp Loop) StartTunnel(client, upstream int, frames bool, sent Sent, toClient []byte, meter Meter, done func(Stats)) Tunnel {
	l := lp.l
	t := newTunnel(client, upstream, frames, sent, l.idleTimeout(), done)
	t.meter = meter
	l.addTunnel(t)
	if !t.closed {
		l.writeTo(&t.client, toClient)
	}
	if !t.closed && len(sent.Up) > 0 {
		l.writeTo(&t.upstream, sent.Up)
	}
	return Tunnel{l: l, t: t}
}

// EachLoop runs fn on every loop and returns once all have run it; false
// if the relay stopped, and fn ran on none or some of them.
func (r *Relay) EachLoop(fn func(Loop)) bool {
	var wg sync.WaitGroup
	ok := true
	for _, l := range r.loops {
		wg.Add(1)
		if !l.do(func(l *loop) { defer wg.Done(); fn(Loop{l}) }) {
			wg.Done()
			ok = false
		}
	}
	wg.Wait()
	return ok
}

// Timer is a function due on a loop at a time; see Loop.AfterFunc.
type Timer struct {
	at    int64 // unix nanoseconds
	fn    func()
	index int // in the loop's heap; -1 when not in it
}

// AfterFunc runs fn on the loop at or soon after at (unix nanoseconds),
// unless the timer is stopped first. Timers die with the loop: a loop that
// stops runs none (its watchers are closed instead).
func (lp Loop) AfterFunc(at int64, fn func()) *Timer {
	t := &Timer{at: at, fn: fn}
	heap.Push(&lp.l.timers, t)
	return t
}

// StopTimer stops t if it has not run yet. It must be called on t's loop.
func (lp Loop) StopTimer(t *Timer) {
	if t != nil && t.index >= 0 {
		heap.Remove(&lp.l.timers, t.index)
	}
}

// timerHeap orders timers by when they are due.
type timerHeap []*Timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*Timer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}

// runTimers runs the timers due by l.now.
func (l *loop) runTimers() {
	for len(l.timers) > 0 && l.timers[0].at <= l.now {
		t := heap.Pop(&l.timers).(*Timer)
		t.fn()
	}
}

// nextSeq numbers a new registration with epoll (see loop.seq).
func (l *loop) nextSeq() int32 {
	l.seq++
	return l.seq
}

// closeWatchers closes the watchers still registered: the loop is stopping.
func (l *loop) closeWatchers() {
	for fd := range l.watchers {
		if w := l.watchers[fd].w; w != nil {
			l.watchers[fd] = watch{}
			w.Close()
		}
	}
	l.timers = nil
}
