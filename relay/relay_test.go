package relay

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair is a relayed tunnel between two real loopback TCP connections: the
// test holds the far ends, client and server.
type pair struct {
	client, server *net.TCPConn
	done           chan Stats
	handle         Tunnel
}

func newRelay(t testing.TB, idle time.Duration) *Relay {
	t.Helper()
	r, err := New(Options{Loops: 2, Idle: idle})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// connPair returns both ends of one loopback TCP connection.
func connPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	other := <-accepted
	t.Cleanup(func() { dialed.Close(); other.Close() })
	return dialed.(*net.TCPConn), other.(*net.TCPConn)
}

// relayed builds client ⇄ [gateway side A | relay | gateway side B] ⇄ server.
func relayed(t *testing.T, r *Relay) *pair {
	t.Helper()
	client, gwClient := connPair(t)
	gwUpstream, server := connPair(t)
	p := &pair{client: client, server: server, done: make(chan Stats, 1)}
	h, err := r.Add(Endpoint{TCP: gwClient}, Endpoint{TCP: gwUpstream}, false, Sent{}, nil, func(s Stats) { p.done <- s })
	if err != nil {
		t.Fatal(err)
	}
	p.handle = h
	return p
}

func (p *pair) stats(t *testing.T) Stats {
	t.Helper()
	select {
	case s := <-p.done:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("tunnel did not end")
		return Stats{}
	}
}

// Both directions at once, more than socket buffers hold, with a slow
// reader on one side: the relay must back up (pending buffer, EPOLLOUT)
// without losing, reordering or deadlocking.
func TestFullDuplexWithBackpressure(t *testing.T) {
	r := newRelay(t, time.Minute)
	p := relayed(t, r)
	const size = 8 << 20
	up := make([]byte, size)
	down := make([]byte, size)
	for i := range up {
		up[i] = byte(rand.IntN(256))
		down[i] = byte(rand.IntN(256))
	}
	exchangeBothWays(t, p.client, p.server, up, down,
		func() { p.client.Write(up); p.client.CloseWrite() },
		func() { p.server.Write(down); p.server.CloseWrite() })
	st := p.stats(t)
	if st.Up != size || st.Down != size {
		t.Errorf("stats up=%d down=%d closed by %s, want %d each", st.Up, st.Down, st.ClosedBy, size)
	}
}

// exchangeBothWays runs sendUp (up, from client) and sendDown (down, from
// server) at once while slow readers at the far ends hash what arrives,
// and reports a direction whose bytes differ from what was sent.
func exchangeBothWays(t *testing.T, client, server io.Reader, up, down []byte, sendUp, sendDown func()) {
	t.Helper()
	var wg sync.WaitGroup
	var gotUp, gotDown [32]byte
	wg.Add(4)
	go func() { defer wg.Done(); sendUp() }()
	go func() { defer wg.Done(); sendDown() }()
	go func() { defer wg.Done(); gotUp = slowHash(server) }()
	go func() { defer wg.Done(); gotDown = slowHash(client) }()
	wg.Wait()
	if gotUp != sha256.Sum256(up) {
		t.Error("client→server bytes differ")
	}
	if gotDown != sha256.Sum256(down) {
		t.Error("server→client bytes differ")
	}
}

// The upstream half-closes first, so the gateway shuts its write side
// towards the client; then the client uploads and half-closes while the
// upstream is not reading. The client's socket is then hung up both ways
// (EPOLLHUP) with bytes still queued behind the backed-up relay: those
// bytes must still arrive, and the tunnel must not end early.
func TestHangUpWhileBackedUpLosesNothing(t *testing.T) {
	r := newRelay(t, time.Minute)
	client, gwClient := connPair(t)
	gwUpstream, server := connPair(t)
	// Small buffers towards the upstream, so the relay backs up quickly.
	gwUpstream.SetWriteBuffer(4096)
	server.SetReadBuffer(4096)
	done := make(chan Stats, 1)
	if _, err := r.Add(Endpoint{TCP: gwClient}, Endpoint{TCP: gwUpstream}, false, Sent{}, nil, func(s Stats) { done <- s }); err != nil {
		t.Fatal(err)
	}
	server.CloseWrite()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client after the upstream's half-close: %d, %v; want EOF", n, err)
	}
	up := make([]byte, 100<<10)
	for i := range up {
		up[i] = byte(rand.IntN(256))
	}
	if _, err := client.Write(up); err != nil {
		t.Fatal(err)
	}
	client.CloseWrite()
	time.Sleep(300 * time.Millisecond) // the hang-up is seen while backed up
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, up) {
		t.Fatalf("upstream got %d of %d bytes (equal %v), %v", len(got), len(up), bytes.Equal(got, up), err)
	}
	select {
	case st := <-done:
		if st.Up != int64(len(up)) || st.ClosedBy != ClosedByUpstream {
			t.Fatalf("stats %+v", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("tunnel did not end")
	}
}

// slowHash reads r to EOF in small, paused steps and hashes it.
func slowHash(r io.Reader) [32]byte {
	h := sha256.New()
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if err != nil {
			break
		}
		if i%256 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func TestHalfCloseEachWay(t *testing.T) {
	r := newRelay(t, time.Minute)
	for _, clientFirst := range []bool{true, false} {
		p := relayed(t, r)
		first, second := p.client, p.server
		if !clientFirst {
			first, second = second, first
		}
		first.Write([]byte("bye"))
		first.CloseWrite()
		got, _ := io.ReadAll(io.LimitReader(second, 3))
		if string(got) != "bye" {
			t.Fatalf("got %q", got)
		}
		second.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := second.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("after the half-close: %d, %v; want EOF", n, err)
		}
		// The other direction still flows.
		second.Write([]byte("after"))
		second.CloseWrite()
		got, _ = io.ReadAll(first)
		if string(got) != "after" {
			t.Fatalf("reverse direction after half-close: %q", got)
		}
		want := ClosedByClient
		if !clientFirst {
			want = ClosedByUpstream
		}
		if st := p.stats(t); st.ClosedBy != want {
			t.Fatalf("closed by %q, want %q", st.ClosedBy, want)
		}
	}
}

func TestIdleAndCloseReasons(t *testing.T) {
	// A byte every 50 ms against a 1 s idle timeout: the busy tunnel stays
	// busy even when load delays the writes many times over.
	r := newRelay(t, time.Second)
	idle := relayed(t, r)
	busy := relayed(t, r)
	stop := time.After(2500 * time.Millisecond)
	for tick := time.Tick(50 * time.Millisecond); ; {
		select {
		case <-tick:
			busy.server.Write([]byte("x")) // one direction only keeps it alive
			continue
		case <-stop:
		}
		break
	}
	if st := idle.stats(t); st.ClosedBy != ClosedIdle {
		t.Fatalf("idle tunnel closed by %q", st.ClosedBy)
	}
	select {
	case st := <-busy.done:
		t.Fatalf("busy tunnel ended: %+v", st)
	default:
	}
	busy.handle.Close(ClosedDrain)
	if st := busy.stats(t); st.ClosedBy != ClosedDrain {
		t.Fatalf("closed tunnel says %q", st.ClosedBy)
	}
	// The far ends see the close.
	busy.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(busy.client); err != nil {
		t.Fatalf("client read after close: %v", err)
	}
}

func TestCloseAllAndStop(t *testing.T) {
	r, err := New(Options{Loops: 2, Idle: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var pairs []*pair
	for range 20 {
		pairs = append(pairs, relayed(t, r))
	}
	r.CloseAll(ClosedDrain)
	for _, p := range pairs {
		if st := p.stats(t); st.ClosedBy != ClosedDrain {
			t.Fatalf("closed by %q", st.ClosedBy)
		}
	}
	r.Stop()
	client, gw := connPair(t)
	up, _ := connPair(t)
	if _, err := r.Add(Endpoint{TCP: gw}, Endpoint{TCP: up}, false, Sent{}, nil, nil); err != ErrClosed {
		t.Fatalf("Add after Stop: %v", err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(client); err != nil {
		t.Fatalf("refused tunnel not closed: %v", err)
	}
}

// Many short tunnels reuse descriptor numbers; none may get another's bytes.
func TestManyTunnelsKeepTheirBytes(t *testing.T) {
	r := newRelay(t, time.Minute)
	var wg sync.WaitGroup
	for i := range 200 {
		p := relayed(t, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte{byte(i)}, 1000+i)
			p.client.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(p.server, got); err != nil || !bytes.Equal(got, msg) {
				t.Errorf("tunnel %d: %v", i, err)
			}
			p.client.Close()
			p.server.Close()
		}()
	}
	wg.Wait()
}

// relayedFrames is relayed with frame tracking on.
func relayedFrames(t testing.TB, r *Relay) *pair {
	t.Helper()
	return relayedFramesAfter(t, r, Sent{})
}

// relayedFramesAfter is relayedFrames, after sent went by at the switch.
func relayedFramesAfter(t testing.TB, r *Relay, sent Sent) *pair {
	t.Helper()
	return relayedMetered(t, r, sent, nil)
}

// relayedMetered is relayedFramesAfter with a meter.
func relayedMetered(t testing.TB, r *Relay, sent Sent, m Meter) *pair {
	t.Helper()
	client, gwClient := connPair(t)
	gwUpstream, server := connPair(t)
	p := &pair{client: client, server: server, done: make(chan Stats, 1)}
	h, err := r.Add(Endpoint{TCP: gwClient}, Endpoint{TCP: gwUpstream}, true, sent, m, func(s Stats) { p.done <- s })
	if err != nil {
		t.Fatal(err)
	}
	p.handle = h
	return p
}

// maskedText is a client's text frame (mask key 0, so the payload reads as is).
func maskedText(payload string) []byte {
	return append([]byte{0x81, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
}

// A drain ends a tracked tunnel with Close 1001 to both endpoints, at frame
// boundaries, then waits for them to close.
func TestDrainSaysGoingAway(t *testing.T) {
	r := newRelay(t, time.Minute)
	p := relayedFrames(t, r)
	p.client.Write(maskedText("hi"))
	got := make([]byte, 8)
	if _, err := io.ReadFull(p.server, got); err != nil || string(got[6:]) != "hi" {
		t.Fatalf("frame before drain: %q, %v", got, err)
	}
	p.server.Write([]byte{0x81, 0x02, 'y', 'o'})
	if _, err := io.ReadFull(p.client, got[:4]); err != nil {
		t.Fatal(err)
	}

	r.CloseAll(ClosedDrain)
	// To the client, unmasked: 88 02 03 E9, then EOF.
	p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	toClient, _ := io.ReadAll(p.client)
	if !bytes.Equal(toClient, []byte{0x88, 0x02, 0x03, 0xE9}) {
		t.Fatalf("client got % x, want 88 02 03 e9", toClient)
	}
	// To the upstream, masked (the gateway is its client), then EOF.
	p.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	toServer, _ := io.ReadAll(p.server)
	if len(toServer) != 8 || toServer[0] != 0x88 || toServer[1] != 0x82 {
		t.Fatalf("upstream got % x, want a masked close frame", toServer)
	}
	code := []byte{toServer[6] ^ toServer[2], toServer[7] ^ toServer[3]}
	if !bytes.Equal(code, []byte{0x03, 0xE9}) {
		t.Fatalf("close code % x, want 03 e9", code)
	}
	// Both endpoints close; the tunnel ends before the grace.
	start := time.Now()
	p.client.Close()
	p.server.Close()
	st := p.stats(t)
	if st.ClosedBy != ClosedDrain || time.Since(start) > time.Second {
		t.Fatalf("ended %v after both closed, by %q", time.Since(start), st.ClosedBy)
	}
	if st.UpMessages != 1 || st.DownMessages != 1 {
		t.Fatalf("messages up %d down %d, want 1 and 1", st.UpMessages, st.DownMessages)
	}
}

// A side in the middle of a frame gets no Close (it would land inside the
// frame's payload); the grace then ends the tunnel.
func TestDrainMidFrame(t *testing.T) {
	r := newRelay(t, time.Minute)
	p := relayedFrames(t, r)
	half := maskedText("0123456789")[:9] // header plus 3 of 10 payload bytes
	p.client.Write(half)
	io.ReadFull(p.server, make([]byte, len(half)))

	r.CloseAll(ClosedDrain)
	p.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, _ := io.ReadAll(p.server); len(rest) != 0 {
		t.Fatalf("upstream got % x in the middle of a frame", rest)
	}
	p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if toClient, _ := io.ReadAll(p.client); !bytes.Equal(toClient, []byte{0x88, 0x02, 0x03, 0xE9}) {
		t.Fatalf("client got % x", toClient)
	}
	// Nobody closes: the grace does.
	if st := p.stats(t); st.ClosedBy != ClosedDrain {
		t.Fatalf("closed by %q", st.ClosedBy)
	}
}

// The bytes relayed at the switch are where the tracked streams start: a
// frame begun there and ended in the relay is followed, so a drain in its
// middle sends no Close that way, and Stats counts it.
func TestSentBytesStartTheStreams(t *testing.T) {
	r := newRelay(t, time.Minute)
	whole := maskedText("0123456789")
	p := relayedFramesAfter(t, r, Sent{Up: whole[:9], Down: []byte{0x81, 0x02, 'y', 'o'}})

	r.CloseAll(ClosedDrain)
	p.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, _ := io.ReadAll(p.server); len(rest) != 0 {
		t.Fatalf("upstream got % x in the middle of a frame begun in Sent.Up", rest)
	}
	p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if toClient, _ := io.ReadAll(p.client); !bytes.Equal(toClient, []byte{0x88, 0x02, 0x03, 0xE9}) {
		t.Fatalf("client got % x, want 88 02 03 e9 after Sent.Down's frame", toClient)
	}
	p.client.Close()
	p.server.Close()
	if st := p.stats(t); st.Up != 9 || st.Down != 4 || st.UpMessages != 0 || st.DownMessages != 1 {
		t.Fatalf("stats %+v, want up 9, down 4, messages up 0, down 1", st)
	}
}

// The relay's per-read path allocates nothing: 10,000 frames through a
// tracked tunnel cost fewer heap allocations than a handful, whatever
// else the process does meanwhile.
func TestRelayPathDoesNotAllocate(t *testing.T) {
	r := newRelay(t, time.Minute)
	p := relayedFrames(t, r)
	frame := maskedText("0123456789abcdef")
	got := make([]byte, len(frame))
	roundTrip := func() {
		p.client.Write(frame)
		io.ReadFull(p.server, got)
	}
	for range 100 { // warm up: pools, first epoll registrations
		roundTrip()
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10000 {
		roundTrip()
	}
	runtime.ReadMemStats(&after)
	if n := after.Mallocs - before.Mallocs; n > 50 {
		t.Fatalf("%d allocations for 10,000 relayed frames", n)
	}
}

// testMeter adds up what the relay publishes.
type testMeter struct {
	up, down, upMsgs, downMsgs atomic.Int64
}

func (m *testMeter) Moved(tr Traffic) {
	m.up.Add(tr.Up)
	m.down.Add(tr.Down)
	m.upMsgs.Add(int64(tr.UpMessages))
	m.downMsgs.Add(int64(tr.DownMessages))
}

func (m *testMeter) get() Traffic {
	return Traffic{m.up.Load(), m.down.Load(), uint64(m.upMsgs.Load()), uint64(m.downMsgs.Load())}
}

// The meter learns a live tunnel's traffic within a scan or two (not only
// when it ends), sent bytes included, and the sum of what it was told is
// the tunnel's Stats. The first Close frame's code reaches the Stats.
func TestMeterAndCloseCode(t *testing.T) {
	r := newRelay(t, time.Minute)
	m := &testMeter{}
	early := maskedText("early")
	p := relayedMetered(t, r, Sent{Up: early}, m)
	up := maskedText("hello")
	down := []byte("\x82\x03abc")
	for range 3 {
		p.client.Write(up)
	}
	p.server.Write(down)
	p.server.Write(down)
	want := Traffic{Up: int64(len(early) + 3*len(up)), Down: int64(2 * len(down)), UpMessages: 4, DownMessages: 2}
	deadline := time.Now().Add(10 * time.Second)
	for m.get() != want {
		if time.Now().After(deadline) {
			t.Fatalf("meter saw %+v while the tunnel lived; want %+v", m.get(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The client says goodbye with 1000 (masked with a key that is not
	// zero), the server answers 1001; the first one seen counts.
	closeFrame := []byte{0x88, 0x82, 0x11, 0x22, 0x33, 0x44, 0x03 ^ 0x11, 0xE8 ^ 0x22}
	p.client.Write(closeFrame)
	buf := make([]byte, len(closeFrame))
	p.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(p.server, buf); err != nil {
		t.Fatal(err)
	}
	p.server.Write([]byte{0x88, 0x02, 0x03, 0xE9})
	p.server.Close()
	p.client.Close()
	st := p.stats(t)
	if st.CloseCode != 1000 {
		t.Errorf("CloseCode = %d, want 1000", st.CloseCode)
	}
	final := Traffic{Up: st.Up, Down: st.Down, UpMessages: st.UpMessages, DownMessages: st.DownMessages}
	if got := m.get(); got != final || final.Up != want.Up+int64(len(closeFrame)) {
		t.Errorf("meter total %+v, stats %+v; want equal, with %d bytes up", got, final, want.Up+int64(len(closeFrame)))
	}
}

// BenchmarkRelayRoundTrip measures the relay's hot path: a small frame
// each way through a tracked, metered tunnel per op. With -benchmem it
// shows the allocations per relayed message (0: the loop reuses its
// buffer, and metering adds none).
func BenchmarkRelayRoundTrip(b *testing.B) {
	r := newRelay(b, time.Minute)
	p := relayedMetered(b, r, Sent{}, &testMeter{})
	up := maskedText("0123456789abcdef")
	down := []byte("\x81\x100123456789abcdef")
	got := make([]byte, len(up))
	b.ReportAllocs()
	for b.Loop() {
		p.client.Write(up)
		io.ReadFull(p.server, got)
		p.server.Write(down)
		io.ReadFull(p.client, got[:len(down)])
	}
}

// Ended tunnels are reported from one goroutine: a mass disconnect must
// not start a goroutine per tunnel (Go keeps their descriptors and recent
// stacks after the wave, memory that never comes back).
func TestMassCloseStartsNoGoroutinePerTunnel(t *testing.T) {
	r := newRelay(t, time.Minute)
	const n = 300
	pairs := make([]*pair, n)
	for i := range pairs {
		pairs[i] = relayed(t, r)
	}
	created := func() uint64 {
		s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	before := created()
	r.CloseAll(ClosedDrain)
	for _, p := range pairs {
		p.stats(t)
	}
	if started := created() - before; started > n/10 {
		t.Fatalf("closing %d tunnels started %d goroutines", n, started)
	}
}

// Stop returns only after every tunnel it closed was reported.
func TestStopReportsEveryTunnel(t *testing.T) {
	r, err := New(Options{Loops: 2, Idle: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	pairs := make([]*pair, 50)
	for i := range pairs {
		pairs[i] = relayed(t, r)
	}
	r.Stop()
	for i, p := range pairs {
		select {
		case <-p.done:
		default:
			t.Fatalf("tunnel %d not reported when Stop returned", i)
		}
	}
}

// A tunnel its loop cannot watch ends at once, blamed on the relay with
// the cause, not on an endpoint. epoll refuses a regular file (EPERM),
// which stands in for the failures that cannot be provoked on demand
// (ENOMEM, ENOSPC when max_user_watches is reached).
func TestUnwatchableTunnelEndsAsInternal(t *testing.T) {
	r := newRelay(t, time.Minute)
	client, gwClient := connPair(t)
	cfd, err := takeFD(gwClient)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "not-a-socket")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ffd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan Stats, 1)
	tn := newTunnel(cfd, ffd, true, Sent{}, 0, func(s Stats) { done <- s })
	if !r.loops[0].do(func(l *loop) { l.addTunnel(tn) }) {
		t.Fatal("loop stopped")
	}
	p := &pair{done: done}
	st := p.stats(t)
	if st.ClosedBy != ClosedInternal || !errors.Is(st.Err, unix.EPERM) {
		t.Errorf("closed by %q with error %v; want %q with epoll_ctl's EPERM", st.ClosedBy, st.Err, ClosedInternal)
	}
	// The client's socket was closed with the tunnel.
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := client.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client read after the tunnel ended: %d, %v; want EOF", n, err)
	}
}
