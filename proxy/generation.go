package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/acmecert"
	"github.com/wsgate/wsgate/config"
)

// generation is what one validated configuration builds: the router, one
// upstreamSet per upstream name, the listeners' settings and the timeouts.
// The gateway publishes it whole (Gateway.gen) and nothing changes it
// afterwards: a request or handshake loads the current generation once
// and uses that one to the end, so a reload never changes the rules under
// a request in flight. What must outlive a generation (a pool's servers
// with their leases and health, ACME managers) is carried into the next
// one by name rather than rebuilt.
type generation struct {
	id             int64
	cfg            *config.Config
	router         *Router
	timeouts       timeouts
	maxHeaderBytes int
	// listeners are by listenerKey; order is the configuration's.
	listeners map[string]*listenerInfo
	order     []string
	// certHeaders are every listener's client-certificate header name,
	// removed from requests on all listeners.
	certHeaders certHeaderNames
	upstreams   map[string]*upstreamSet
	acme        []*acmecert.Manager // of the TLS listeners with acme
	// httpsPort is the bound port of the first TLS listener, the target of
	// redirect_https; set once the listeners are bound, before publishing.
	httpsPort string
	// stop ends this generation's background work (health checks, DNS
	// discovery, certificate watches); set by start.
	stop context.CancelFunc
}

// buildGeneration builds the generation of cfg. prev, when not nil, is the
// generation in service: its pools and ACME managers are carried into the
// new one where the configuration keeps them, but nothing of prev is
// changed here: the new generation takes effect only through commit, so a
// build that fails leaves the gateway as it was.
func (g *Gateway) buildGeneration(cfg *config.Config, prev *generation) (_ *generation, err error) {
	next := &generation{
		cfg: cfg,
		timeouts: timeouts{
			connect:   cfg.Timeouts.Connect.Std(),
			handshake: cfg.Timeouts.Handshake.Std(),
			idle:      cfg.Timeouts.Idle.Std(),
			drain:     cfg.Timeouts.Drain.Std(),
		},
		maxHeaderBytes: cfg.Limits.MaxHeaderBytes,
		listeners:      map[string]*listenerInfo{},
		upstreams:      map[string]*upstreamSet{},
		certHeaders:    clientCertHeaderNames(cfg.Listeners),
	}
	defer func() {
		if err != nil {
			next.discardACME(prev)
		}
	}()
	for i, lc := range cfg.Listeners {
		key := listenerKey(lc.Address, i)
		var was *listenerInfo
		if prev != nil {
			was = prev.listeners[key]
		}
		li, err := g.newListenerInfo(lc, next.timeouts.handshake, was)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", lc.Address, err)
		}
		next.listeners[key] = li
		next.order = append(next.order, key)
		if li.acme != nil {
			next.acme = append(next.acme, li.acme)
		}
	}
	for name, uc := range cfg.Upstreams {
		var was *upstreamSet
		if prev != nil {
			was = prev.upstreams[name]
		}
		set, err := g.newUpstreamSet(name, uc, cfg.Resolver, next, was)
		if err != nil {
			return nil, err
		}
		next.upstreams[name] = set
	}
	var routes []*Route
	for _, rc := range cfg.Routes {
		set, ok := next.upstreams[rc.Upstream]
		if !ok {
			return nil, fmt.Errorf("route %s%s: upstream %q is not defined", rc.Host, rc.Path, rc.Upstream)
		}
		rt := &Route{Host: rc.Host, Path: rc.Path, Pool: set.pool, Policy: set.policy,
			RawTunnel: rc.Tunnel == config.TunnelRaw, tls: set.tls, set: set, gen: next}
		rt.metrics = g.metrics.route(rt, set.name)
		routes = append(routes, rt)
	}
	next.router = NewRouter(routes)
	return next, nil
}

// listenerKey names the listener configured at index i with address
// across generations: its address, which configurations keep unique,
// except with port 0 (any free port, in configurations built in Go),
// which is told apart by its index.
func listenerKey(address string, i int) string {
	if strings.HasSuffix(address, ":0") {
		return address + "#" + strconv.Itoa(i)
	}
	return address
}

// discardACME closes the ACME managers a failed build made for itself
// (not those carried from prev, which stay in service).
func (next *generation) discardACME(prev *generation) {
	for _, li := range next.listeners {
		if li.acme != nil && !prev.hasACME(li.acme) {
			li.acme.Close()
		}
	}
}

// hasACME reports whether m serves one of gen's listeners; gen may be nil.
func (gen *generation) hasACME(m *acmecert.Manager) bool {
	if gen == nil {
		return false
	}
	for _, x := range gen.acme {
		if x == m {
			return true
		}
	}
	return false
}

// resolveNew resolves, once, the DNS names of the pools this generation
// made (not those it carried, which are already serving): a name that
// resolves to nothing is most likely a mistake in the file, better
// refused before it serves, at start as at a reload.
func (gen *generation) resolveNew(ctx context.Context) error {
	var errs []error
	for _, set := range gen.upstreams {
		if set.discovery != nil && set.carried == nil {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			errs = append(errs, set.discovery.ResolveNow(rctx))
			cancel()
		}
	}
	return errors.Join(errs...)
}

// setHTTPSPort records the bound port of the first TLS listener; bound
// gives a listener's bound address by its key.
func (gen *generation) setHTTPSPort(bound func(address string) net.Addr) {
	for _, addr := range gen.order {
		if gen.listeners[addr].tls == nil {
			continue
		}
		if tcp, ok := bound(addr).(*net.TCPAddr); ok {
			gen.httpsPort = strconv.Itoa(tcp.Port)
		}
		return
	}
}

// start runs the generation's background work until stopped: the health
// checks and DNS discovery of its upstreams and the certificate watches of
// its TLS listeners.
func (gen *generation) start(g *Gateway) {
	ctx, cancel := context.WithCancel(context.Background())
	gen.stop = cancel
	for _, set := range gen.upstreams {
		set.start(ctx, g)
	}
	for _, li := range gen.listeners {
		if li.tls != nil {
			go li.tls.Watch(ctx, g.certPoll)
		}
	}
}

// upstreamNames returns gen's upstream names, sorted.
func (gen *generation) upstreamNames() []string {
	names := make([]string, 0, len(gen.upstreams))
	for name := range gen.upstreams {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// sameConfig reports whether two parts of configurations are equal, so that
// what was built from one may serve the other.
func sameConfig(a, b any) bool { return reflect.DeepEqual(a, b) }
