package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wsgate/wsgate/relay"
	"github.com/wsgate/wsgate/upstream"
)

// liveTunnel is an open tunnel, registered so a drain can wait for it and
// end it, and a reload can end those whose server or route it took out.
type liveTunnel interface {
	abort(why Closer)
	placement() placed
}

// placed is where a tunnel was placed: the route it matched (in the
// generation of its handshake) and the server it reached.
type placed struct {
	route  *Route
	server *upstream.Server
}

func (p placed) placement() placed { return p }

// relayedTunnel is a tunnel carried by the event-loop relay. It is
// registered before the relay has taken it, so an abort that comes first
// is remembered and applied once the relay's handle exists.
type relayedTunnel struct {
	placed
	mu      sync.Mutex
	handle  relay.Tunnel
	running bool // handle is set
	aborted Closer
}

func (r *relayedTunnel) abort(why Closer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		r.handle.Close(string(why))
	} else if r.aborted == "" {
		r.aborted = why
	}
}

func (r *relayedTunnel) started(h relay.Tunnel) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handle, r.running = h, true
	if r.aborted != "" {
		h.Close(string(r.aborted))
	}
}

// tunnelInfo is what the access log says of a tunnel.
type tunnelInfo struct {
	route      *Route
	server     *upstream.Server
	clientAddr string
	host       string // the Host the client asked for
	uri        string
	start      time.Time
	requested  time.Time // when the client's handshake head was read
	headLen    int       // length of the 101 head at the start of the bytes sent to the client
	// active is the tunnel's series of wsgate_tunnels_active, set once
	// the tunnel is registered.
	active prometheus.Gauge
}

// startTunnel registers a tunnel and starts it: first the bytes due at the
// switch (the 101 head and any frames behind it, the client's early
// frames), then the event-loop relay, which carries TCP and TLS sides alike.
func (g *Gateway) startTunnel(client, up net.Conn, toClient, toUpstream []byte, info tunnelInfo) {
	live := &relayedTunnel{placed: placed{info.route, info.server}}
	if !g.registerTunnel(live, &info) {
		client.Close()
		up.Close()
		info.server.Release()
		return
	}

	// The switch bytes are written on the caller's goroutine (fasthttp's
	// hijack goroutine): a few hundred bytes into a fresh socket do not
	// block, and a goroutine per handshake is saved.
	closer := writeSwitchBytes(client, up, toClient, toUpstream, info.route.gen.timeouts.handshake)
	if closer != ClosedByClient {
		info.route.metrics.upgraded(info.requested)
	}
	if closer != "" {
		client.Close()
		up.Close()
		g.endTunnel(live, info, tunnelCounts{}, closer)
		return
	}
	// The frames after the heads belong to the tunnel: the relay follows
	// and counts them as if it had relayed them. Counts are of bytes after
	// the handshake, in both directions (plaintext under TLS).
	sent := relay.Sent{Up: toUpstream, Down: toClient[info.headLen:]}
	h, err := g.addToRelay(client, up, !info.route.RawTunnel, sent, info.route.metrics, g.relayedDone(live, info))
	if err != nil {
		client.Close()
		up.Close()
		closer := ClosedDrain // the relay has stopped: the gateway is stopping
		if !errors.Is(err, relay.ErrClosed) {
			closer = ClosedInternal
			g.relayFailed(info, err)
		}
		// The relay never had them: the route's counters get them here.
		info.route.metrics.bytesUp.Add(float64(len(sent.Up)))
		info.route.metrics.bytesDown.Add(float64(len(sent.Down)))
		g.endTunnel(live, info, tunnelCounts{up: int64(len(sent.Up)), down: int64(len(sent.Down))}, closer)
		return
	}
	live.started(h)
}

// addToRelay hands a tunnel's conns to the relay (relay.Relay.Add).
func (g *Gateway) addToRelay(client, up net.Conn, frames bool, sent relay.Sent, meter relay.Meter, done func(relay.Stats)) (relay.Tunnel, error) {
	ce, err := relayEndpoint(client)
	if err != nil {
		return relay.Tunnel{}, err
	}
	ue, err := relayEndpoint(up)
	if err != nil {
		return relay.Tunnel{}, err
	}
	return g.relay.Add(ce, ue, frames, sent, meter, done)
}

// relayEndpoint is what the relay needs of one side of a tunnel: a TCP
// conn, or a TLS session over a tcpConn whose calls the relay reroutes to
// itself. The gateway's listeners and dialer make no other kind.
func relayEndpoint(c net.Conn) (relay.Endpoint, error) {
	switch c := c.(type) {
	case *net.TCPConn:
		return relay.Endpoint{TCP: c}, nil
	case *tls.Conn:
		var under *tcpConn
		switch nc := c.NetConn().(type) {
		case *tcpConn: // an upstream's
			under = nc
		case *clientConn: // a client's on a TLS listener
			under = nc.tcpConn
		default:
			return relay.Endpoint{}, fmt.Errorf("cannot relay TLS over a %T", nc)
		}
		return relay.Endpoint{TCP: under.TCPConn, TLS: c, Reroute: under.reroute}, nil
	}
	return relay.Endpoint{}, fmt.Errorf("cannot relay a %T", c)
}

// registerTunnel turns a pending 101 (Gateway.pending) into a live tunnel,
// registered for drains and reloads and counted in wsgate_tunnels_active.
// It reports false when the drain is over: the caller then closes the
// conns and releases the server's lease.
func (g *Gateway) registerTunnel(live liveTunnel, info *tunnelInfo) bool {
	g.mu.Lock()
	g.pending--
	if g.stopped {
		g.tunnelsChanged()
		g.mu.Unlock()
		return false
	}
	g.tunnels.Add(live)
	g.memory.tunnelsNow(g.tunnels.Len())
	g.mu.Unlock()
	info.active = g.metrics.tunnelsActive.WithLabelValues(info.route.metrics.name, info.route.set.name, info.server.Address)
	info.active.Inc()
	return true
}

// relayedDone is the done function of a relayed tunnel: its stats go to
// the access log and the metrics.
func (g *Gateway) relayedDone(live liveTunnel, info tunnelInfo) func(relay.Stats) {
	return func(st relay.Stats) {
		counts := tunnelCounts{up: st.Up, down: st.Down, upMsgs: int64(st.UpMessages), downMsgs: int64(st.DownMessages), closeCode: st.CloseCode}
		if info.route.RawTunnel {
			counts.upMsgs, counts.downMsgs = -1, -1
		}
		if st.Err != nil {
			g.relayFailed(info, st.Err)
		}
		g.endTunnel(live, info, counts, Closer(st.ClosedBy))
	}
}

// relayFailed logs a tunnel the relay could not carry: the client got its
// 101 and then a close, and neither endpoint is to blame.
func (g *Gateway) relayFailed(info tunnelInfo, err error) {
	g.errorf("tunnel %s %s to upstream %s server %s: the relay could not take it, closed after the 101: %v",
		info.clientAddr, info.uri, info.route.Pool.Name, info.server.Address, err)
}

// writeSwitchBytes writes the bytes due at the switch, within the handshake
// timeout. It returns "" or the side that failed.
func writeSwitchBytes(client, up net.Conn, toClient, toUpstream []byte, timeout time.Duration) Closer {
	deadline := time.Now().Add(timeout)
	client.SetWriteDeadline(deadline)
	up.SetWriteDeadline(deadline)
	if _, err := client.Write(toClient); err != nil {
		return ClosedByClient
	}
	if len(toUpstream) > 0 {
		if _, err := up.Write(toUpstream); err != nil {
			return ClosedByUpstream
		}
	}
	client.SetWriteDeadline(time.Time{})
	up.SetWriteDeadline(time.Time{})
	return ""
}

// tunnelCounts are a tunnel's bytes and messages each way; messages are -1
// where frames were not followed (raw tunnels). closeCode is the
// status of the first Close frame seen (relay.Stats.CloseCode), 0 if none.
type tunnelCounts struct {
	up, down, upMsgs, downMsgs int64
	closeCode                  uint16
}

// endTunnel unregisters a tunnel and writes its access log line.
func (g *Gateway) endTunnel(t liveTunnel, info tunnelInfo, c tunnelCounts, closer Closer) {
	info.server.Release()
	g.mu.Lock()
	g.tunnels.Delete(t)
	g.memory.tunnelsNow(g.tunnels.Len())
	g.tunnelsChanged()
	g.mu.Unlock()
	info.active.Dec()
	g.metrics.tunnelClosed(info.route, closer, c.closeCode)
	d := time.Since(info.start)
	if !g.accessLog.json.Load() {
		g.accessLog.write(newLogLine(info.start).word(info.clientAddr).word("ws").word(info.route.Pool.Name).word(info.uri).
			str("upstream", info.server.Address).int("status", 101).
			str("duration", d.Round(time.Millisecond).String()).
			int("up", c.up).int("down", c.down).count("msgs_up", c.upMsgs).count("msgs_down", c.downMsgs).
			str("closed_by", string(closer)).end())
		return
	}
	g.accessLog.write(newJSONLine(info.start, "tunnel").str("client", info.clientAddr).str("host", info.host).
		str("path", info.uri).str("route", routeName(info.route)).str("upstream", info.route.Pool.Name).
		str("server", info.server.Address).int("status", 101).ms("duration_ms", d).
		int("bytes_up", c.up).int("bytes_down", c.down).count("messages_up", c.upMsgs).count("messages_down", c.downMsgs).
		closeCode(int(c.closeCode)).str("closed_by", string(closer)).end())
}

// tunnelAborted undoes the pending count of a 101 whose tunnel never
// started (the client conn failed while it was being handed over).
func (g *Gateway) tunnelAborted() {
	g.mu.Lock()
	g.pending--
	g.tunnelsChanged()
	g.mu.Unlock()
}

// tunnelsChanged wakes a drain waiting for tunnels to end; it checks the
// counts itself. g.mu is held.
func (g *Gateway) tunnelsChanged() { g.idle.Broadcast() }
