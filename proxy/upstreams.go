package proxy

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/upstream"
)

// upstreamSet is one upstream of one generation: its pool, how requests
// are placed in it, how its servers are reached, and how their health is
// followed. The pool is carried from the previous generation's set of the
// same name, so servers keep their leases, passive health and sticky
// tokens through a reload; the rest is this generation's.
type upstreamSet struct {
	name string
	cfg  *config.Upstream
	pool *upstream.Pool
	// poolOpts and servers are what commit publishes in the pool (servers
	// is nil when discovery owns the list).
	poolOpts upstream.Options
	servers  []*upstream.Server
	policy   *Policy
	tls      *upstreamTLS // nil: plain TCP
	clients  *hostClients
	// discovery follows DNS for the pool's servers; nil when all are IP
	// addresses.
	discovery *upstream.Discovery
	health    *config.HealthCheck
	// carried is the previous generation's set of this name, or nil for a
	// pool new in this generation.
	carried *upstreamSet
	// retries counts tries after a failed one (wsgate_upstream_retries_total).
	retries prometheus.Counter
}

// newUpstreamSet builds the set of upstream name. With was (the previous
// generation's set of that name) the pool is carried, and so are the
// upstream TLS settings and the HTTP clients when their configuration did
// not change; was itself is left as it is until commit.
func (g *Gateway) newUpstreamSet(name string, uc *config.Upstream, resolver string, gen *generation, was *upstreamSet) (*upstreamSet, error) {
	policy, err := newPolicy(uc)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", name, err)
	}
	set := &upstreamSet{name: name, cfg: uc, carried: was, health: uc.HealthCheck, policy: policy,
		retries: g.metrics.retries.WithLabelValues(name)}
	set.poolOpts = upstream.Options{Balance: uc.Balance, HashBoundedLoad: uc.HashBoundedLoad, FailTimeout: uc.FailTimeout.Std()}
	if uc.MaxFails != nil {
		set.poolOpts.MaxFails = *uc.MaxFails
	}
	if was != nil && sameConfig(was.cfg.TLS, uc.TLS) {
		set.tls = was.tls
	} else {
		ut, err := newUpstreamTLS(name, uc.TLS)
		if err != nil {
			return nil, err
		}
		set.tls = ut
	}
	clients := clientSettings{connect: gen.timeouts.connect, idle: gen.timeouts.idle, readBufferSize: gen.maxHeaderBytes, tls: set.tls}
	if was != nil && was.clients.settings == clients {
		set.clients = was.clients
	} else {
		set.clients = newHostClients(clients)
	}

	var specs []upstream.ServerSpec
	static := true
	for _, sc := range uc.Servers {
		specs = append(specs, upstream.ServerSpec{Address: sc.Address, SRV: sc.SRV,
			Settings: upstream.Settings{Weight: sc.Weight, MaxConns: sc.MaxConns, Backup: sc.Backup, Down: sc.Down}})
		if sc.SRV != "" || !isIPAddress(sc.Address) {
			static = false
		}
	}
	if was != nil {
		set.pool = was.pool
	} else {
		pool, err := upstream.NewPool(name, nil, set.poolOpts)
		if err != nil {
			return nil, err
		}
		set.pool = pool
	}
	if static {
		set.servers = make([]*upstream.Server, 0, len(specs))
		for _, sp := range specs {
			set.servers = append(set.servers, upstream.NewServer(sp.Address, sp.Settings))
		}
		if was == nil {
			// Not serving yet: the list may go in now.
			set.pool.SetServers(set.servers)
		}
	} else {
		set.discovery = upstream.NewDiscovery(set.pool, specs, resolver, uc.ResolveInterval.Std(), g.errorf)
	}
	return set, nil
}

// commit puts the set's pool settings and static server list in service;
// the gateway calls it once the set's generation is published. Servers
// that leave take no new connections; their live tunnels carry on (see
// Gateway.retireServers).
func (set *upstreamSet) commit() error {
	if set.carried == nil {
		return nil
	}
	if err := set.pool.Configure(set.poolOpts); err != nil {
		return err
	}
	if set.servers != nil {
		set.pool.SetServers(set.servers)
	}
	return nil
}

// retire takes a pool that no generation serves any more out of service:
// all its servers leave it.
func (set *upstreamSet) retire() { set.pool.SetServers(nil) }

// start runs the set's DNS discovery and health checks until ctx ends.
func (set *upstreamSet) start(ctx context.Context, g *Gateway) {
	if set.discovery != nil {
		go set.discovery.Run(ctx)
	}
	if hc := set.health; hc != nil {
		probe := httpProbe(hc.Path, hc.ExpectStatus, set.tls)
		if hc.WebSocket {
			probe = websocketProbe(hc.Path, set.tls)
		}
		cc := upstream.CheckConfig{Interval: hc.Interval.Std(), Timeout: hc.Timeout.Std(), Healthy: hc.Healthy, Unhealthy: hc.Unhealthy}
		set.pool.StartChecks(ctx, cc, probe, g.errorf)
	}
}

// isIPAddress reports whether host:port names an IP address (or no host),
// which needs no resolving.
func isIPAddress(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && (host == "" || net.ParseIP(host) != nil)
}

// clientSettings are what an upstream's HTTP clients are made with; the
// clients (and their idle connections) are carried through a reload that
// does not change them.
type clientSettings struct {
	connect, idle  time.Duration
	readBufferSize int
	tls            *upstreamTLS
}

// hostClients are an upstream's HTTP clients, one per server, made on
// first use: servers come and go with discovery. Clients are per upstream,
// not per address alone: two upstreams may reach one address, one over
// TLS.
type hostClients struct {
	settings clientSettings
	mu       sync.Mutex
	m        map[*upstream.Server]*fasthttp.HostClient // a server belongs to one pool
}

func newHostClients(s clientSettings) *hostClients {
	return &hostClients{settings: s, m: map[*upstream.Server]*fasthttp.HostClient{}}
}

// closeIdle closes the clients' idle keep-alive connections, once no
// generation uses these clients: they would otherwise linger until the
// keep-alive timeout, with a goroutine each.
func (c *hostClients) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, hc := range c.m {
		hc.CloseIdleConnections()
	}
}

// get returns srv's client.
func (c *hostClients) get(srv *upstream.Server) *fasthttp.HostClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	hc, ok := c.m[srv]
	if !ok {
		// A new server: forget the clients of servers that left their
		// pool and have nothing in flight, or a discovery that churns
		// (pods come and go) would grow the map for ever.
		for s := range c.m {
			if s.Removed() && s.Active() == 0 {
				delete(c.m, s)
			}
		}
		hc = newHostClient(srv, c.settings)
		c.m[srv] = hc
	}
	return hc
}
