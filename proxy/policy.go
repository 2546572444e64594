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

// request describes ctx's request to the pool: its hash key and the server
// its sticky cookie names.
func (p *Policy) request(ctx *fasthttp.RequestCtx, clientIP string) upstream.Request {
	r := upstream.Request{ClientIP: clientIP}
	switch p.hashKey.Kind {
	case config.HashKeyHeader:
		r.Key = string(peekFold(&ctx.Request.Header, p.hashKey.Name))
	case config.HashKeyCookie:
		r.Key = string(ctx.Request.Header.Cookie(p.hashKey.Name))
	case config.HashKeyQuery:
		r.Key = string(ctx.QueryArgs().Peek(p.hashKey.Name))
	}
	if p.stickyCookie != "" {
		r.Sticky = string(ctx.Request.Header.Cookie(p.stickyCookie))
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
	req   upstream.Request
	tried []*upstream.Server
	// leaseTaken: the try that returned nil handed the server's lease on
	// with the exchange that outlives it (a streamed response body, a
	// 101's tunnel), whose end releases it (handOff).
	leaseTaken bool
}

// handOff records that the current try's lease goes with the exchange it
// started, which releases it when it ends: upstreamBody.Close for a
// response, the tunnel's end or its abandon for a 101.
func (pl *placement) handOff() { pl.leaseTaken = true }

// maxLostRaces bounds how often one request re-picks because servers
// filled up between Pick and Acquire, before it answers 503.
const maxLostRaces = 16

// tryServers offers the route's servers to try, as the balancer orders
// them and each at most once, until try returns nil (done: answered or
// relayed). A try that fails before anything reached the client counts
// against the server's passive health, and the next server is offered
// while retries and try_timeout allow; then the client gets the last
// failure (502, or 504 for a handshake that timed out). With no server
// left to offer the client gets 502, or 503 when every usable server is at
// max_conns. A try that failed in the gateway itself (local) ends the
// request at once with its 503, counting nothing against the server.
// Both paths retry only here, so the rules for moving on live in one
// place.
//
// try is called with a lease on the server taken (Acquire), which is
// released here when try fails or answers the client itself, and
// otherwise by the exchange try handed it to (placement.handOff).
func (g *Gateway) tryServers(ctx *fasthttp.RequestCtx, rt *Route, try func(*placement, *upstream.Server) *tryFailure) {
	start := time.Now()
	clientIP, _ := clientAddress(ctx)
	pl := &placement{req: rt.Policy.request(ctx, clientIP)}
	tries := rt.Policy.tries(len(rt.Pool.Servers()))
	lostRaces := 0
	for {
		srv, err := rt.Pool.Pick(&pl.req, pl.tried)
		if err == nil && !srv.Acquire() {
			// Another request took the server's last max_conns slot since
			// Pick saw it free: pick again, and it is skipped as full.
			if lostRaces++; lostRaces < maxLostRaces {
				continue
			}
			err = upstream.ErrAllFull
		}
		if err == upstream.ErrAllFull {
			g.fail(ctx, rt, "-", fasthttp.StatusServiceUnavailable, "every server of "+rt.Pool.Name+" is at max_conns")
			ctx.Response.Header.Set("Retry-After", "1")
			return
		}
		if err != nil {
			g.fail(ctx, rt, "-", fasthttp.StatusBadGateway, "no upstream server of "+rt.Pool.Name+" could be reached")
			return
		}
		pl.tried = append(pl.tried, srv)
		if len(pl.tried) > 1 {
			rt.set.retries.Inc()
		}
		pl.leaseTaken = false
		failure := try(pl, srv)
		if !pl.leaseTaken {
			srv.Release()
		}
		if failure == nil {
			return
		}
		if failure.local {
			// Not the server's failure, and every other server would
			// fail the same way: answer now, count nothing.
			g.fail(ctx, rt, srv.Address, failure.status, failure.reason)
			ctx.Response.Header.Set("Retry-After", "1")
			return
		}
		rt.Pool.ReportFailure(srv)
		g.metrics.upstreamFailed(rt.set.name, srv.Address, failure.cause)
		if len(pl.tried) >= tries || (rt.Policy.tryTimeout > 0 && time.Since(start) >= rt.Policy.tryTimeout) {
			reason := failure.reason
			if len(pl.tried) > 1 {
				reason += " (" + strconv.Itoa(len(pl.tried)) + " servers tried)"
			}
			g.fail(ctx, rt, srv.Address, failure.status, reason)
			return
		}
	}
}
