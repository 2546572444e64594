package relay

// tunnel is the state of one relayed connection pair, owned by its loop.
type tunnel struct {
	client, upstream side
	lastActive       int64 // unix nanoseconds of the last byte read either way
	closedBy         string
	closed           bool
	done             func(Stats)
}

// side is one socket of a tunnel: what is read from it goes to peer.
type side struct {
	fd   int
	name string // ClosedByClient or ClosedByUpstream
	t    *tunnel
	peer *side

	events         uint32  // what epoll watches now
	read           int64   // bytes read from this side
	readDone       bool    // EOF read from this side
	pending        []byte  // bytes for this side that it could not take yet
	pendingBuf     *[]byte // the pooled buffer behind pending
	shutAfterFlush bool    // the peer ended: shut our write side once pending is out
}

func newTunnel(clientFD, upstreamFD int, done func(Stats)) *tunnel {
	t := &tunnel{done: done}
	t.client = side{fd: clientFD, name: ClosedByClient, t: t, peer: &t.upstream}
	t.upstream = side{fd: upstreamFD, name: ClosedByUpstream, t: t, peer: &t.client}
	return t
}

// wantsRead: s is read unless it ended or its peer is backed up.
func (s *side) wantsRead() bool { return !s.readDone && len(s.peer.pending) == 0 }

func (s *side) releasePending() {
	if s.pendingBuf != nil {
		pendingBuffers.Put(s.pendingBuf)
		s.pendingBuf, s.pending = nil, nil
	}
}

// track follows the frames in b; it is where the frame tracker plugs in.
func (s *side) track(b []byte) {}

func (t *tunnel) stats() Stats {
	return Stats{Up: t.client.read, Down: t.upstream.read, ClosedBy: t.closedBy}
}
