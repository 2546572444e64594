package relay

import (
	"bytes"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// onLoop runs fn on lp and waits for it.
func onLoop(t *testing.T, lp Loop, fn func(Loop)) {
	t.Helper()
	done := make(chan struct{})
	if !lp.Post(func(lp Loop) { defer close(done); fn(lp) }) {
		t.Fatal("the loop stopped")
	}
	<-done
}

// firstLoop is a handle on the relay's first loop.
func firstLoop(r *Relay) Loop { return Loop{r.loops[0]} }

// funcWatcher is a Watcher made of functions.
type funcWatcher struct {
	ready  func(Loop, uint32)
	closed func()
}

func (w *funcWatcher) Ready(lp Loop, ev uint32) { w.ready(lp, ev) }
func (w *funcWatcher) Close() {
	if w.closed != nil {
		w.closed()
	}
}

// gatewayFD is the gateway's end of a loopback TCP connection as a bare
// descriptor, and the test's end.
func gatewayFD(t *testing.T) (int, io.ReadWriteCloser) {
	t.Helper()
	far, near := connPair(t)
	fd, err := takeFD(near)
	if err != nil {
		t.Fatal(err)
	}
	return fd, far
}

// Timers run in the order they are due, on the loop, and a stopped one
// does not run.
func TestTimersRunInOrder(t *testing.T) {
	r := newRelay(t, time.Minute)
	ran := make(chan int, 4)
	onLoop(t, firstLoop(r), func(lp Loop) {
		now := lp.Now()
		for _, d := range []int{30, 10, 20} {
			lp.AfterFunc(now+int64(d)*int64(time.Millisecond), func() { ran <- d })
		}
		stopped := lp.AfterFunc(now+int64(15*time.Millisecond), func() { ran <- 15 })
		lp.StopTimer(stopped)
		lp.StopTimer(stopped) // a second stop does nothing
	})
	for _, want := range []int{10, 20, 30} {
		select {
		case got := <-ran:
			if got != want {
				t.Fatalf("timer %d ms ran, want %d ms next", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("timer %d ms did not run", want)
		}
	}
	// A function posted after the last timer ran shows the stopped one
	// did not run in between.
	onLoop(t, firstLoop(r), func(Loop) {})
	select {
	case got := <-ran:
		t.Fatalf("timer %d ms ran", got)
	default:
	}
}

// A watcher is told when its descriptor is readable; the descriptors it
// then hands to StartTunnel become a tunnel that writes the bytes due at
// the switch first and then relays both ways.
func TestWatchThenStartTunnel(t *testing.T) {
	r := newRelay(t, time.Minute)
	cfd, client := gatewayFD(t)
	ufd, server := gatewayFD(t)
	lp := firstLoop(r)
	got := make(chan string, 1)
	stats := make(chan Stats, 1)
	w := &funcWatcher{}
	w.ready = func(lp Loop, _ uint32) {
		n, _ := unix.Read(cfd, lp.Buffer())
		got <- string(lp.Buffer()[:n])
		lp.Forget(cfd)
		lp.StartTunnel(cfd, ufd, false, Sent{Up: []byte("early"), Down: []byte("first")}, []byte("HEAD|first"), nil,
			func(s Stats) { stats <- s })
	}
	onLoop(t, lp, func(lp Loop) {
		if err := lp.Watch(cfd, unix.EPOLLIN, w); err != nil {
			t.Error(err)
		}
	})
	io.WriteString(client, "hello")
	if s := <-got; s != "hello" {
		t.Fatalf("the watcher read %q", s)
	}
	expect := func(c io.Reader, want string) {
		t.Helper()
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
			t.Fatalf("read %q %v, want %q", buf, err, want)
		}
	}
	expect(client, "HEAD|first")
	expect(server, "early")
	io.WriteString(client, "up")
	expect(server, "up")
	io.WriteString(server, "down")
	expect(client, "down")
	client.Close()
	server.Close()
	select {
	case s := <-stats:
		// Sent counts, the 101 head does not: "first"+"down", "early"+"up".
		if s.Up != 7 || s.Down != 9 {
			t.Errorf("stats up %d down %d, want 7 and 9", s.Up, s.Down)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tunnel did not end")
	}
}

// An event of a descriptor closed while the loop handled an earlier event
// of the same batch does not reach the watcher that took the descriptor's
// number meanwhile (as a socket accepted or dialed on the loop does).
func TestStaleEventsAreDropped(t *testing.T) {
	r := newRelay(t, time.Minute)
	lp := firstLoop(r)
	afd, a := gatewayFD(t)
	bfd, b := gatewayFD(t)
	idleFD, _ := gatewayFD(t) // connected, nothing to read: no events
	stale := make(chan uint32, 1)
	reused := -1
	first := &funcWatcher{}
	first.ready = func(lp Loop, _ uint32) {
		lp.Forget(afd)
		// Close b's descriptor within the batch, and give its number to
		// an idle socket.
		lp.Forget(bfd)
		unix.Close(bfd)
		fd, err := unix.FcntlInt(uintptr(idleFD), unix.F_DUPFD_CLOEXEC, bfd)
		if err != nil || fd != bfd {
			t.Errorf("duplicate %d %v, want number %d again", fd, err, bfd)
			return
		}
		reused = fd
		lp.Watch(fd, unix.EPOLLIN, &funcWatcher{ready: func(_ Loop, ev uint32) {
			select {
			case stale <- ev:
			default:
			}
		}})
	}
	second := &funcWatcher{ready: func(Loop, uint32) { t.Error("b's watcher ran though a's closed it first") }}
	block := make(chan struct{})
	onLoop(t, lp, func(lp Loop) {
		lp.Watch(afd, unix.EPOLLIN, first)
		lp.Watch(bfd, unix.EPOLLIN, second)
	})
	// Hold the loop while both become readable, a first, so one wait
	// returns both events in that order.
	held := make(chan struct{})
	lp.Post(func(Loop) { close(held); <-block })
	<-held
	io.WriteString(a, "x")
	io.WriteString(b, "y")
	close(block)
	onLoop(t, lp, func(Loop) {})
	onLoop(t, lp, func(lp Loop) {
		if reused >= 0 {
			lp.Forget(reused)
			unix.Close(reused)
		}
		unix.Close(afd)
		unix.Close(idleFD)
	})
	select {
	case ev := <-stale:
		t.Fatalf("the new socket's watcher got the closed one's event %#x", ev)
	default:
	}
}

// Once both endpoints sent a whole Close frame, the first end closes the
// tunnel: the client gets the upstream's Close and then the end of the
// connection without having to end its own side first, and the tunnel is
// over. Before the closing handshake, an end is passed on as a half-close
// and the other direction goes on (TestHalfCloseEachWay).
func TestEndAfterClosingHandshakeClosesTunnel(t *testing.T) {
	r := newRelay(t, time.Minute)
	p := relayedFrames(t, r)
	// The client begins the closing handshake (masked, code 1000).
	p.client.Write([]byte{0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2})
	got := make([]byte, 8)
	if _, err := io.ReadFull(p.server, got); err != nil {
		t.Fatal(err)
	}
	// The upstream answers with its Close and closes first, as RFC 6455
	// has servers do.
	p.server.Write([]byte{0x88, 0x02, 0x03, 0xE8})
	p.server.Close()
	p.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	toClient, err := io.ReadAll(p.client)
	if err != nil || !bytes.Equal(toClient, []byte{0x88, 0x02, 0x03, 0xE8}) {
		t.Fatalf("client got % x, %v; want the Close and then the end", toClient, err)
	}
	// The client has not closed: the tunnel ended all the same.
	st := p.stats(t)
	if st.ClosedBy != ClosedByClient || st.CloseCode != 1000 {
		t.Fatalf("closed by %q with code %d, want the client (it began the closing handshake) and 1000", st.ClosedBy, st.CloseCode)
	}
}
