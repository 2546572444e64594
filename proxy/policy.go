package proxy

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/upstream"
)

// Policy is how the requests of one upstream are placed: what the hash
// key is, which cookie pins a client, how many servers to try.
type Policy struct {
	hashKey      config.HashKey // with balance hash; Kind "" otherwise
	stickyCookie string
	retries      int // -1: every other server
	tryTimeout   time.Duration
}

func newPolicy(u *config.Upstream) (*Policy, error) {
	p := &Policy{stickyCookie: u.StickyCookie, retries: -1, tryTimeout: u.TryTimeout.Std()}
	if u.Retries != nil {
		p.retries = *u.Retries
	}
	if u.Balance == "hash" {
		var err error
		if p.hashKey, err = config.ParseHashKey(u.HashKey); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// request describes a request to the pool: its hash key and the server
// its sticky cookie names. uri is the request's parsed URI.
func (p *Policy) request(h *fasthttp.RequestHeader, uri *fasthttp.URI, clientIP string) upstream.Request {
	r := upstream.Request{ClientIP: clientIP}
	switch p.hashKey.Kind {
	case config.HashKeyHeader:
		r.Key = string(peekFold(h, p.hashKey.Name))
	case config.HashKeyCookie:
		r.Key = string(h.Cookie(p.hashKey.Name))
	case config.HashKeyQuery:
		r.Key = string(uri.QueryArgs().Peek(p.hashKey.Name))
	}
	if p.stickyCookie != "" {
		r.Sticky = string(h.Cookie(p.stickyCookie))
	}
	return r
}

// stickyCookieFor returns the Set-Cookie value that pins the client to srv,
// or "" when the client's cookie already does (or stickiness is off).
func (p *Policy) stickyCookieFor(r *upstream.Request, srv *upstream.Server, secure bool) string {
	if p.stickyCookie == "" || r.Sticky == srv.Token() {
		return ""
	}
	c := p.stickyCookie + "=" + srv.Token() + "; Path=/; HttpOnly; SameSite=Lax"
	if secure {
		c += "; Secure"
	}
	return c
}

// tries is how many servers a request may be offered to in all.
func (p *Policy) tries(servers int) int {
	if p.retries < 0 {
		return max(servers, 1)
	}
	return p.retries + 1
}

// tryFailure is why a try failed before anything reached the client; it
// is the client's answer if no other server may be tried.
type tryFailure struct {
	status int
	reason string
	// cause is the reason label of wsgate_upstream_failures_total.
	cause string
	// local: the gateway itself failed (out of descriptors or memory), not
	// the server; nothing is counted against the server, and no other
	// server is tried, since each would fail the same way.
	local bool
}

// placement is one request's way through its pool.
type placement struct {
	rt    *Route
	req   upstream.Request
	tried []*upstream.Server
	// leaseTaken: the try that returned nil handed the server's lease on
	// with the exchange that outlives it (a streamed response body, a
	// 101's tunnel), whose end releases it (handOff).
	leaseTaken bool
	start      time.Time
	tries      int // how many servers may be tried in all
	lostRaces  int
}

func newPlacement(rt *Route, req upstream.Request) *placement {
	return &placement{rt: rt, req: req, start: time.Now(), tries: rt.Policy.tries(len(rt.Pool.Servers()))}
}

// handOff records that the current try's lease goes with the exchange it
// started, which releases it when it ends: upstreamBody.Close for a
// response, the tunnel's end or its abandon for a 101.
func (pl *placement) handOff() { pl.leaseTaken = true }

// maxLostRaces bounds how often one request re-picks because servers
// filled up between Pick and Acquire, before it answers 503.
const maxLostRaces = 16

// gatewayAnswer is the gateway's own answer to a client whose request no server
// took: status and a one-line reason; upstream is the server it concerns
// or "-"; retryAfter adds Retry-After: 1.
type gatewayAnswer struct {
	status     int
	reason     string
	upstream   string
	retryAfter bool
}

// next picks the next server to try, as the balancer orders them and each
// at most once, and takes a lease on it; or, with no server left to offer,
// returns the client's answer: 502, or 503 when every usable server is at
// max_conns.
func (pl *placement) next() (*upstream.Server, *gatewayAnswer) {
	rt := pl.rt
	for {
		srv, err := rt.Pool.Pick(&pl.req, pl.tried)
		if err == nil && !srv.Acquire() {
			// Another request took the server's last max_conns slot since
			// Pick saw it free: pick again, and it is skipped as full.
			if pl.lostRaces++; pl.lostRaces < maxLostRaces {
				continue
			}
			err = upstream.ErrAllFull
		}
		if err == upstream.ErrAllFull {
			return nil, &gatewayAnswer{status: fasthttp.StatusServiceUnavailable, reason: "every server of " + rt.Pool.Name + " is at max_conns", upstream: "-", retryAfter: true}
		}
		if err != nil {
			return nil, &gatewayAnswer{status: fasthttp.StatusBadGateway, reason: "no upstream server of " + rt.Pool.Name + " could be reached", upstream: "-"}
		}
		pl.tried = append(pl.tried, srv)
		if len(pl.tried) > 1 {
			rt.set.retries.Inc()
		}
		pl.leaseTaken = false
		return srv, nil
	}
}

// failed handles a try of srv that failed before anything reached the
// client, once its lease is released. It counts against the server's
// passive health, and nil is returned while retries and try_timeout allow
// the next server; otherwise the client's answer, the last failure (502,
// or 504 for a handshake that timed out). A try that failed in the gateway
// itself (local) ends the request at once with its 503, counting nothing
// against the server.
func (g *Gateway) failed(pl *placement, srv *upstream.Server, failure *tryFailure) *gatewayAnswer {
	rt := pl.rt
	if failure.local {
		// Not the server's failure, and every other server would fail
		// the same way: answer now, count nothing.
		return &gatewayAnswer{status: failure.status, reason: failure.reason, upstream: srv.Address, retryAfter: true}
	}
	rt.Pool.ReportFailure(srv)
	g.metrics.upstreamFailed(rt.set.name, srv.Address, failure.cause)
	if len(pl.tried) >= pl.tries || (rt.Policy.tryTimeout > 0 && time.Since(pl.start) >= rt.Policy.tryTimeout) {
		reason := failure.reason
		if len(pl.tried) > 1 {
			reason += " (" + strconv.Itoa(len(pl.tried)) + " servers tried)"
		}
		return &gatewayAnswer{status: failure.status, reason: reason, upstream: srv.Address}
	}
	return nil
}

// tryServers offers the route's servers to try (placement.next) until try
// returns nil (done: answered or relayed), moving on after a failure as
// placement.failed says. Both the goroutine paths and the handshakes of
// the event loops retry only by these two, so the rules for moving on live
// in one place.
//
// try is called with a lease on the server taken (Acquire), which is
// released here when try fails or answers the client itself, and
// otherwise by the exchange try handed it to (placement.handOff).
func (g *Gateway) tryServers(ctx *fasthttp.RequestCtx, rt *Route, try func(*placement, *upstream.Server) *tryFailure) {
	clientIP, _ := clientAddress(ctx)
	pl := newPlacement(rt, rt.Policy.request(&ctx.Request.Header, ctx.URI(), clientIP))
	for {
		srv, answer := pl.next()
		if answer == nil {
			failure := try(pl, srv)
			if !pl.leaseTaken {
				srv.Release()
			}
			if failure == nil {
				return
			}
			answer = g.failed(pl, srv, failure)
		}
		if answer != nil {
			g.fail(ctx, rt, answer.upstream, answer.status, answer.reason)
			if answer.retryAfter {
				ctx.Response.Header.Set("Retry-After", "1")
			}
			return
		}
	}
}
