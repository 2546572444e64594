package relay

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testpki"
)

// reroutable is the conn under a gateway-side TLS session in these tests,
// as the gateway's own is: Add reroutes it to the relay.
type reroutable struct {
	*net.TCPConn
	to net.Conn
}

func (c *reroutable) reroute(to net.Conn) { c.to = to }

func (c *reroutable) Read(p []byte) (int, error) {
	if c.to != nil {
		return c.to.Read(p)
	}
	return c.TCPConn.Read(p)
}

func (c *reroutable) Write(p []byte) (int, error) {
	if c.to != nil {
		return c.to.Write(p)
	}
	return c.TCPConn.Write(p)
}

func (c *reroutable) Close() error {
	if c.to != nil {
		return c.to.Close()
	}
	return c.TCPConn.Close()
}

func (c *reroutable) SetDeadline(t time.Time) error {
	if c.to != nil {
		return c.to.SetDeadline(t)
	}
	return c.TCPConn.SetDeadline(t)
}

func (c *reroutable) SetReadDeadline(t time.Time) error {
	if c.to != nil {
		return c.to.SetReadDeadline(t)
	}
	return c.TCPConn.SetReadDeadline(t)
}

func (c *reroutable) SetWriteDeadline(t time.Time) error {
	if c.to != nil {
		return c.to.SetWriteDeadline(t)
	}
	return c.TCPConn.SetWriteDeadline(t)
}

// tlsConfigs are a server's and a client's configuration that trust each
// other, with a certificate for 127.0.0.1 made for the test.
func tlsConfigs(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	ca := testpki.NewCA(t, "relay test CA")
	cert := ca.Issue(t, testpki.Options{Names: []string{"127.0.0.1"}})
	return &tls.Config{Certificates: []tls.Certificate{cert.Pair}},
		&tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"}
}

// handshake completes the handshakes of a and b, two ends of a connection.
func handshake(t testing.TB, a, b *tls.Conn) {
	t.Helper()
	errs := make(chan error, 2)
	for _, c := range []*tls.Conn{a, b} {
		go func() {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			err := c.Handshake()
			c.SetDeadline(time.Time{})
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// tlsPair is a relayed tunnel with TLS on one side or both: the test holds
// the far ends (a *tls.Conn where the side speaks TLS).
type tlsPair struct {
	client, server net.Conn
	done           chan Stats
	handle         Tunnel
}

func (p *tlsPair) stats(t *testing.T) Stats { t.Helper(); return (&pair{done: p.done}).stats(t) }

// tlsSides says which sides of a tunnel speak TLS.
type tlsSides struct{ client, upstream bool }

var tlsCombos = []tlsSides{{true, false}, {false, true}, {true, true}}

func (s tlsSides) String() string {
	switch {
	case s.client && s.upstream:
		return "both"
	case s.client:
		return "client"
	}
	return "upstream"
}

// relayedTLS builds client ⇄ [gateway | relay | gateway] ⇄ server with
// TLS where sides says.
func relayedTLS(t testing.TB, r *Relay, sides tlsSides, frames bool) *tlsPair {
	t.Helper()
	return relayedTLSBuffers(t, r, sides, frames, 64<<10)
}

// relayedTLSBuffers is relayedTLS with upBuf bytes of socket buffer from
// the relay to the server.
func relayedTLSBuffers(t testing.TB, r *Relay, sides tlsSides, frames bool, upBuf int) *tlsPair {
	t.Helper()
	serverConf, clientConf := tlsConfigs(t)
	client, gwClient := connPair(t)
	gwUpstream, server := connPair(t)
	// Small socket buffers: the relay backs up (pending, EPOLLOUT) early.
	for _, c := range []*net.TCPConn{client, gwClient, gwUpstream, server} {
		c.SetReadBuffer(64 << 10)
		c.SetWriteBuffer(64 << 10)
	}
	gwUpstream.SetWriteBuffer(upBuf)
	server.SetReadBuffer(upBuf)
	p := &tlsPair{client: client, server: server, done: make(chan Stats, 1)}
	ce, ue := Endpoint{TCP: gwClient}, Endpoint{TCP: gwUpstream}
	if sides.client {
		rc := &reroutable{TCPConn: gwClient}
		far, near := tls.Client(client, clientConf), tls.Server(rc, serverConf)
		handshake(t, far, near)
		p.client, ce.TLS, ce.Reroute = far, near, rc.reroute
	}
	if sides.upstream {
		rc := &reroutable{TCPConn: gwUpstream}
		near, far := tls.Client(rc, clientConf), tls.Server(server, serverConf)
		handshake(t, near, far)
		p.server, ue.TLS, ue.Reroute = far, near, rc.reroute
	}
	h, err := r.Add(ce, ue, frames, Sent{}, nil, func(s Stats) { p.done <- s })
	if err != nil {
		t.Fatal(err)
	}
	p.handle = h
	return p
}

// writeMixed writes b to w in pieces of every size, from 1 byte to 64
// KiB, then ends w's write side.
func writeMixed(w net.Conn, b []byte, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, 1))
	for len(b) > 0 {
		n := 1 + rnd.IntN(1500)
		if rnd.IntN(8) == 0 {
			n = 1 + rnd.IntN(64<<10)
		}
		n = min(n, len(b))
		if _, err := w.Write(b[:n]); err != nil {
			return
		}
		b = b[n:]
	}
	w.(interface{ CloseWrite() error }).CloseWrite()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.IntN(256))
	}
	return b
}

// Both ways at once over TLS, small writes and large, more than socket
// buffers hold, with slow readers: nothing lost, duplicated or reordered
// (hashes), the ends of the streams (close_notify) passed on, and the
// plaintext counted.
func TestTLSFullDuplexWithBackpressure(t *testing.T) {
	r := newRelay(t, time.Minute)
	for _, sides := range tlsCombos {
		t.Run(sides.String(), func(t *testing.T) {
			p := relayedTLS(t, r, sides, false)
			const size = 4 << 20
			up, down := randomBytes(size), randomBytes(size)
			exchangeBothWays(t, p.client, p.server, up, down,
				func() { writeMixed(p.client, up, 1) }, func() { writeMixed(p.server, down, 2) })
			st := p.stats(t)
			if st.Up != size || st.Down != size {
				t.Errorf("stats up=%d down=%d closed by %s, want %d each", st.Up, st.Down, st.ClosedBy, size)
			}
		})
	}
}

// halves writes each record in two writes, a moment apart, so the relay
// reads half a record and must wait for the rest.
type halves struct{ net.Conn }

func (h halves) Write(p []byte) (int, error) {
	half := len(p) / 2
	n, err := h.Conn.Write(p[:half])
	if err != nil {
		return n, err
	}
	time.Sleep(5 * time.Millisecond) // the relay sees the first half alone
	m, err := h.Conn.Write(p[half:])
	return n + m, err
}

// A peer that sends half a TLS record and then waits: the relay keeps the
// half (crypto/tls holds it through the would-block read) and relays the
// record once the rest comes.
func TestTLSPartialRecords(t *testing.T) {
	r := newRelay(t, time.Minute)
	serverConf, clientConf := tlsConfigs(t)
	client, gwClient := connPair(t)
	gwUpstream, server := connPair(t)
	rc := &reroutable{TCPConn: gwClient}
	far, near := tls.Client(halves{client}, clientConf), tls.Server(rc, serverConf)
	handshake(t, far, near)
	done := make(chan Stats, 1)
	if _, err := r.Add(Endpoint{TCP: gwClient, TLS: near, Reroute: rc.reroute}, Endpoint{TCP: gwUpstream}, false, Sent{}, nil, func(s Stats) { done <- s }); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, size := range []int{1, 2, 100, 5000, 16 << 10, 40 << 10} {
		msg := randomBytes(size)
		if _, err := far.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, size)
		if _, err := io.ReadFull(server, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes: %v, equal %v", size, err, bytes.Equal(got, msg))
		}
	}
	far.Close()
	server.Close()
	if st := (&pair{done: done}).stats(t); st.ClosedBy != ClosedByClient {
		t.Errorf("closed by %q", st.ClosedBy)
	}
}

// A TLS side's close_notify is passed on as a half-close (close_notify
// and FIN, or FIN), and the other way keeps flowing.
func TestTLSHalfCloseEachWay(t *testing.T) {
	r := newRelay(t, time.Minute)
	for _, sides := range tlsCombos {
		for _, clientFirst := range []bool{true, false} {
			p := relayedTLS(t, r, sides, false)
			first, second := p.client, p.server
			if !clientFirst {
				first, second = second, first
			}
			first.Write([]byte("bye"))
			first.(interface{ CloseWrite() error }).CloseWrite()
			second.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(second)
			if string(got) != "bye" || err != nil {
				t.Fatalf("%v, client first %v: got %q, %v; want bye, then EOF", sides, clientFirst, got, err)
			}
			second.Write([]byte("after"))
			second.(interface{ CloseWrite() error }).CloseWrite()
			first.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err = io.ReadAll(first)
			if string(got) != "after" || err != nil {
				t.Fatalf("%v, client first %v: reverse direction after the half-close: %q, %v", sides, clientFirst, got, err)
			}
			want := ClosedByClient
			if !clientFirst {
				want = ClosedByUpstream
			}
			if st := p.stats(t); st.ClosedBy != want || st.Up+st.Down != 8 {
				t.Fatalf("%v, client first %v: closed by %q, %d+%d bytes; want %q, 8 bytes", sides, clientFirst, st.ClosedBy, st.Up, st.Down, want)
			}
		}
	}
}

// A drain says Close 1001 inside TLS: the client reads it in plaintext,
// then the session's end (close_notify); the upstream gets it masked.
func TestTLSDrainSaysGoingAway(t *testing.T) {
	r := newRelay(t, time.Minute)
	p := relayedTLS(t, r, tlsSides{true, true}, true)
	p.client.Write(maskedText("hi"))
	got := make([]byte, 8)
	p.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(p.server, got); err != nil || string(got[6:]) != "hi" {
		t.Fatalf("upstream got % x, %v", got, err)
	}
	p.handle.Close(ClosedDrain)
	p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	toClient, err := io.ReadAll(p.client)
	if err != nil || !bytes.Equal(toClient, []byte{0x88, 0x02, 0x03, 0xe9}) {
		t.Fatalf("client got % x, %v; want an unmasked Close 1001, then the end", toClient, err)
	}
	toUpstream, err := io.ReadAll(p.server)
	if err != nil || len(toUpstream) != 8 || toUpstream[0] != 0x88 || toUpstream[1] != 0x82 {
		t.Fatalf("upstream got % x, %v; want a masked Close, then the end", toUpstream, err)
	}
	key := toUpstream[2:6]
	if code := [2]byte{toUpstream[6] ^ key[0], toUpstream[7] ^ key[1]}; code != [2]byte{0x03, 0xe9} {
		t.Fatalf("upstream's Close says % x, want 03 e9", code)
	}
	p.client.Close()
	p.server.Close()
	if st := p.stats(t); st.ClosedBy != ClosedDrain || st.CloseCode != 0 || st.UpMessages != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// An idle TLS tunnel ends at the idle timeout; one with traffic one way
// does not.
func TestTLSIdle(t *testing.T) {
	r := newRelay(t, time.Second)
	idle := relayedTLS(t, r, tlsSides{true, true}, false)
	busy := relayedTLS(t, r, tlsSides{true, true}, false)
	stop := time.After(2500 * time.Millisecond)
	go io.Copy(io.Discard, busy.client)
	for tick := time.Tick(50 * time.Millisecond); ; {
		select {
		case <-tick:
			busy.server.Write([]byte("x"))
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
	idle.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.client.Read(make([]byte, 1)); err == nil {
		t.Fatal("the idle tunnel's client read a byte")
	}
}

// Bytes a session took from the socket before Add (read past what the
// caller consumed at the switch) raise no epoll event: the relay must
// read them at once.
func TestTLSBytesBufferedBeforeAdd(t *testing.T) {
	r := newRelay(t, time.Minute)
	const msg = "hello, buffered world"
	// The session reads its first byte on the caller's goroutine, as a
	// handshake's reader would, so the rest waits decrypted in crypto/tls.
	serverConf, clientConf := tlsConfigs(t)
	client, gwClient := connPair(t)
	gwUpstream, server := connPair(t)
	rc := &reroutable{TCPConn: gwClient}
	far, near := tls.Client(client, clientConf), tls.Server(rc, serverConf)
	handshake(t, far, near)
	if _, err := far.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1)
	near.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(near, first); err != nil {
		t.Fatal(err)
	}
	near.SetReadDeadline(time.Time{})
	gwUpstream.Write(first) // what the caller relays itself at the switch
	if _, err := r.Add(Endpoint{TCP: gwClient, TLS: near, Reroute: rc.reroute}, Endpoint{TCP: gwUpstream}, false, Sent{Up: first}, nil, nil); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(server, got); err != nil || string(got) != msg {
		t.Fatalf("upstream got %q, %v; want %q", got, err, msg)
	}
}

// The upstream ends its stream first; then a TLS client uploads more than
// the sockets hold and ends its own (close_notify) while the upstream is
// not reading. The client's end must wait behind the backed-up bytes
// (ending the tunnel then would drop them), and every byte arrive.
func TestTLSEndWhileBackedUpLosesNothing(t *testing.T) {
	r := newRelay(t, time.Minute)
	for _, sides := range tlsCombos {
		// Small buffers towards the upstream: the relay backs up at once,
		// and the little room a flush frees cannot take what the relay
		// reads next.
		p := relayedTLSBuffers(t, r, sides, false, 8192)
		p.server.(interface{ CloseWrite() error }).CloseWrite()
		p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := p.client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("%v: client after the upstream's end: %d, %v; want EOF", sides, n, err)
		}
		// Less than the client's sockets hold: the client's write and
		// close_notify complete before the upstream reads.
		up := randomBytes(100 << 10)
		if _, err := p.client.Write(up); err != nil {
			t.Fatal(err)
		}
		if err := p.client.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		p.server.SetReadDeadline(time.Now().Add(10 * time.Second))
		if got := slowHash(p.server); got != sha256.Sum256(up) {
			t.Fatalf("%v: upstream got other bytes", sides)
		}
		if st := p.stats(t); st.Up != int64(len(up)) || st.ClosedBy != ClosedByUpstream {
			t.Fatalf("%v: stats %+v", sides, st)
		}
	}
}
