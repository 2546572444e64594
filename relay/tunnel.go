package relay

import (
	"crypto/tls"
	"time"

	"github.com/wsgate/wsgate/wsframe"
)

// tunnel is the state of one relayed connection pair, owned by its loop.
type tunnel struct {
	client, upstream side
	lastActive       int64 // unix nanoseconds of the last byte read either way
	idle             int64 // nanoseconds without a byte that end the tunnel; 0: never
	closedBy         string
	err              error // why the relay failed it (ClosedInternal)
	closed           bool
	// closing: Close frames were sent (drain); what still arrives is read
	// and dropped until both sides end or closeAt passes.
	closing bool
	closeAt int64
	done    func(Stats)
	// closeCode is the status of the first Close frame seen either way.
	closeCode uint16
	// meter is told the traffic; published is what it was told so far.
	meter     Meter
	published Traffic
}

// side is one socket of a tunnel: what is read from it goes to peer.
type side struct {
	fd   int
	name string // ClosedByClient or ClosedByUpstream
	t    *tunnel
	peer *side

	events     uint32  // what epoll watches now
	seq        int32   // its registration's number (loop.seq)
	watched    bool    // registered with epoll (see unwatch)
	read       int64   // bytes read from this side, Sent included
	readDone   bool    // EOF read from this side
	pending    []byte  // bytes for this side that it could not take yet
	pendingBuf *[]byte // the pooled buffer behind pending

	// tls, when not nil, is the side's TLS session: what is read from it
	// and written to it goes through tls (tlsside.go), and pending holds
	// ciphertext.
	tls *tls.Conn
	// shutPending: the write side is to be shut once pending is written.
	shutPending bool
	// writeShut: the write side was shut down; nothing more may go out.
	writeShut bool
	// again: queued in the loop's again list (see readSoon).
	again bool

	// frames follows the WebSocket frames read from this side, while
	// tracking is on (websocket tunnels) and the stream made sense.
	frames   wsframe.Tracker
	tracking bool
}

func newTunnel(clientFD, upstreamFD int, frames bool, sent Sent, idle time.Duration, done func(Stats)) *tunnel {
	t := &tunnel{done: done, idle: int64(idle)}
	t.client = side{fd: clientFD, name: ClosedByClient, t: t, peer: &t.upstream, read: int64(len(sent.Up))}
	t.upstream = side{fd: upstreamFD, name: ClosedByUpstream, t: t, peer: &t.client, read: int64(len(sent.Down))}
	if frames {
		t.client.frames, t.client.tracking = wsframe.New(true, 0), true
		t.upstream.frames, t.upstream.tracking = wsframe.New(false, 0), true
		// The streams start with the bytes sent at the switch: trackers
		// that skipped them would take the middle of a frame begun there
		// for a boundary, and a drain would put its Close inside it.
		t.client.track(sent.Up)
		t.upstream.track(sent.Down)
	}
	return t
}

// wantsRead: s is read unless it ended or its peer is backed up; once the
// tunnel is closing, only until it ends (what it sends is dropped).
func (s *side) wantsRead() bool {
	if s.t.closing {
		return !s.readDone
	}
	return !s.readDone && len(s.peer.pending) == 0
}

func (s *side) releasePending() {
	if s.pendingBuf != nil {
		pendingBuffers.Put(s.pendingBuf)
		s.pendingBuf, s.pending = nil, nil
	}
}

// track follows the frames in b. A stream that breaks RFC 6455 is still
// relayed (the endpoints judge their peer), but no longer tracked, so the
// gateway will not inject frames into it.
func (s *side) track(b []byte) {
	if s.tracking {
		if _, err := s.frames.Feed(b); err != nil {
			s.tracking = false
		}
		if s.t.closeCode == 0 {
			s.t.closeCode = s.frames.CloseCode()
			if s.t.closeCode != 0 && s.t.closedBy == "" {
				// The endpoint that began the closing handshake ended
				// the tunnel, whichever then closes its connection
				// first (RFC 6455 has the server close first).
				s.t.closedBy = s.name
			}
		}
	}
}

// closingHandshakeDone reports whether s, which just ended, and its peer
// both sent a whole Close frame and nothing is owed to the peer: RFC 6455's
// closing handshake is over, and neither endpoint may send anything more.
// The tunnel then closes at once, as nginx closes an upgraded connection at
// the first end, instead of passing the half-close on and waiting for the
// peer's end: a system call, a wake-up and a read fewer per connection.
// Over TLS the half-close carries a close_notify, so those wait as before.
func (s *side) closingHandshakeDone() bool {
	p := s.peer
	return s.tracking && p.tracking && s.tls == nil && p.tls == nil && len(p.pending) == 0 &&
		s.frames.CloseSeen() && p.frames.CloseSeen() && s.frames.AtFrameBoundary() && p.frames.AtFrameBoundary()
}

// canSendClose reports whether a Close frame may be written to s now:
// everything relayed to it has been written, its write side is open, the
// stream towards it stands at a frame boundary, and no Close went to it
// already.
func (s *side) canSendClose() bool {
	return len(s.pending) == 0 && !s.peer.readDone &&
		s.peer.tracking && s.peer.frames.AtFrameBoundary() && !s.peer.frames.CloseSeen()
}

func (t *tunnel) traffic() Traffic {
	return Traffic{
		Up: t.client.read, Down: t.upstream.read,
		UpMessages: t.client.frames.Messages(), DownMessages: t.upstream.frames.Messages(),
	}
}

func (t *tunnel) stats() Stats {
	tr := t.traffic()
	return Stats{
		Up: tr.Up, Down: tr.Down, UpMessages: tr.UpMessages, DownMessages: tr.DownMessages,
		ClosedBy: t.closedBy, Err: t.err, CloseCode: t.closeCode,
	}
}

// publish tells the meter what the tunnel moved since the last time.
func (t *tunnel) publish() {
	if t.meter == nil {
		return
	}
	now := t.traffic()
	if now == t.published {
		return
	}
	t.meter.Moved(Traffic{
		Up: now.Up - t.published.Up, Down: now.Down - t.published.Down,
		UpMessages: now.UpMessages - t.published.UpMessages, DownMessages: now.DownMessages - t.published.DownMessages,
	})
	t.published = now
}
