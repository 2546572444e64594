package proxy

import (
	"sort"
	"sync"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/upstream"
)

// Status is a snapshot of the gateway for the admin status page: what is
// configured, the state of every server, and what happened lately. It is
// made for JSON.
type Status struct {
	Time        time.Time `json:"time"`
	Started     time.Time `json:"started"`
	Generation  int64     `json:"generation"`
	Draining    bool      `json:"draining"`
	LiveTunnels int       `json:"live_tunnels"`
	// Totals since the start, from the metrics; the page makes rates of
	// them.
	Totals    Totals           `json:"totals"`
	Listeners []ListenerStatus `json:"listeners"`
	Routes    []RouteStatus    `json:"routes"`
	Upstreams []UpstreamStatus `json:"upstreams"`
	Reloads   []Event          `json:"reloads"` // the last ones, oldest first
	Errors    []Event          `json:"errors"`  // the last error-log lines, oldest first
}

// Totals are counts since the gateway started.
type Totals struct {
	Handshakes   float64 `json:"handshakes"` // answered, whatever the status
	HTTPRequests float64 `json:"http_requests"`
	MessagesUp   float64 `json:"messages_up"`
	MessagesDown float64 `json:"messages_down"`
	BytesUp      float64 `json:"bytes_up"`
	BytesDown    float64 `json:"bytes_down"`
}

// ListenerStatus is one listener.
type ListenerStatus struct {
	Address string `json:"address"` // bound
	TLS     bool   `json:"tls"`
}

// RouteStatus is one route.
type RouteStatus struct {
	Host     string `json:"host"`
	Path     string `json:"path"`
	Upstream string `json:"upstream"`
	Tunnel   string `json:"tunnel"`
}

// UpstreamStatus is one upstream and its servers.
type UpstreamStatus struct {
	Name    string         `json:"name"`
	Balance string         `json:"balance"`
	Servers []ServerStatus `json:"servers"`
}

// ServerStatus is one server of an upstream.
type ServerStatus struct {
	Address string `json:"address"`
	// State is "up" (takes new connections) or "down"; Why says why not.
	State   string `json:"state"`
	Why     string `json:"why,omitempty"`
	Weight  int    `json:"weight"`
	Backup  bool   `json:"backup,omitempty"`
	Tunnels int    `json:"tunnels"`
	// InFlight are the server's other leases: HTTP requests (and
	// handshakes) under way.
	InFlight int64 `json:"in_flight"`
	// Failures since the start (wsgate_upstream_failures_total).
	Failures float64 `json:"failures"`
}

// Event is a reload's outcome or an error-log line.
type Event struct {
	Time time.Time `json:"time"`
	Text string    `json:"text"`
	OK   bool      `json:"ok,omitempty"`
}

// Snapshot is Status for the admin listener.
func (g *Gateway) Snapshot() any { return g.Status() }

// Status returns a snapshot of the gateway.
func (g *Gateway) Status() Status {
	gen := g.gen.Load()
	st := Status{Time: time.Now(), Started: g.started, Draining: g.draining.Load()}
	if gen == nil {
		return st
	}
	st.Generation = gen.id
	totals, failures := g.metrics.totals()
	st.Totals = totals
	tunnels := map[*upstream.Server]int{}
	g.mu.Lock()
	st.LiveTunnels = g.tunnels.Len()
	for t := range g.tunnels.All {
		tunnels[t.placement().server]++
	}
	g.mu.Unlock()

	g.lmu.Lock()
	for _, key := range gen.order {
		if b := g.bound[key]; b != nil {
			st.Listeners = append(st.Listeners, ListenerStatus{Address: b.ln.Addr().String(), TLS: gen.listeners[key].tls != nil})
		}
	}
	g.lmu.Unlock()
	for _, rc := range gen.cfg.Routes {
		tunnel := rc.Tunnel
		if tunnel == "" {
			tunnel = config.TunnelWebSocket
		}
		st.Routes = append(st.Routes, RouteStatus{Host: rc.Host, Path: rc.Path, Upstream: rc.Upstream, Tunnel: tunnel})
	}
	for _, name := range gen.upstreamNames() {
		set := gen.upstreams[name]
		us := UpstreamStatus{Name: name, Balance: set.cfg.Balance}
		for _, s := range set.pool.Servers() {
			ss := ServerStatus{Address: s.Address, State: "up", Why: set.pool.Why(s),
				Weight: s.Settings().Weight, Backup: s.Settings().Backup, Tunnels: tunnels[s],
				Failures: failures[[2]string{name, s.Address}]}
			if ss.Why != "" {
				ss.State = "down"
			}
			ss.InFlight = max(0, s.Active()-int64(ss.Tunnels))
			us.Servers = append(us.Servers, ss)
		}
		sort.Slice(us.Servers, func(i, j int) bool { return us.Servers[i].Address < us.Servers[j].Address })
		st.Upstreams = append(st.Upstreams, us)
	}
	st.Reloads = g.recentReloads.list()
	st.Errors = g.recentErrors.list()
	return st
}

// recentEvents keeps the last events of a kind for the status page.
type recentEvents struct {
	mu     sync.Mutex
	events []Event
}

// keepEvents is how many reloads and error lines the status page shows.
const keepEvents = 20

func (r *recentEvents) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == keepEvents {
		copy(r.events, r.events[1:])
		r.events = r.events[:keepEvents-1]
	}
	r.events = append(r.events, e)
}

func (r *recentEvents) list() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}
