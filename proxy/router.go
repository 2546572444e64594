package proxy

import (
	"sort"
	"strings"

	"github.com/wsgate/wsgate/upstream"
)

// Route is a host and path prefix bound to an upstream pool.
type Route struct {
	Host string // exact name, "*.suffix", or "" for any host
	Path string // prefix of the request path
	Pool *upstream.Pool
	// Policy is how requests are placed in Pool (hash key, sticky cookie,
	// retries); routes to one upstream share it.
	Policy *Policy
	// RawTunnel: upgraded connections are copied as bytes, without
	// following WebSocket frames.
	RawTunnel bool
	// tls is how to speak TLS to Pool's servers; nil means plain TCP.
	// Routes to one upstream share it.
	tls *upstreamTLS
	// set is the upstream of Pool in gen, the generation the route
	// belongs to: its HTTP clients, and gen's timeouts, serve the
	// requests the route matched.
	set *upstreamSet
	gen *generation
	// metrics are the route's handles on its metric series.
	metrics *routeMetrics
}

// Router finds the route of a request: the most specific host group that
// has a route whose path prefix matches (exact host, then the longest
// "*.suffix", then routes without a host), and within it the longest prefix.
// Falling through to a less specific host group when no prefix matches is
// what lets one catch-all route serve every host, as nginx's default server
// does.
type Router struct {
	exact    map[string][]*Route // by lower-case host, longest path first
	wildcard []wildcardGroup     // longest suffix first
	any      []*Route            // longest path first
}

type wildcardGroup struct {
	suffix string // ".example.com" for "*.example.com"
	routes []*Route
}

// NewRouter builds a router from routes.
func NewRouter(routes []*Route) *Router {
	r := &Router{exact: map[string][]*Route{}}
	wild := map[string][]*Route{}
	for _, rt := range routes {
		host := strings.ToLower(rt.Host)
		switch {
		case host == "":
			r.any = append(r.any, rt)
		case strings.HasPrefix(host, "*."):
			wild[host[1:]] = append(wild[host[1:]], rt)
		default:
			r.exact[host] = append(r.exact[host], rt)
		}
	}
	for host, list := range r.exact {
		r.exact[host] = byLongestPath(list)
	}
	for suffix, list := range wild {
		r.wildcard = append(r.wildcard, wildcardGroup{suffix: suffix, routes: byLongestPath(list)})
	}
	sort.Slice(r.wildcard, func(i, j int) bool { return len(r.wildcard[i].suffix) > len(r.wildcard[j].suffix) })
	r.any = byLongestPath(r.any)
	return r
}

// routes returns every route of r.
func (r *Router) routes() []*Route {
	all := append([]*Route(nil), r.any...)
	for _, list := range r.exact {
		all = append(all, list...)
	}
	for _, w := range r.wildcard {
		all = append(all, w.routes...)
	}
	return all
}

func byLongestPath(list []*Route) []*Route {
	sort.SliceStable(list, func(i, j int) bool { return len(list[i].Path) > len(list[j].Path) })
	return list
}

// Match returns the route for a Host header value (port allowed) and a
// request path, or nil. An empty host (HTTP/1.0 without Host) matches only
// routes without a host.
func (r *Router) Match(hostHeader, path string) *Route {
	host := strings.ToLower(stripPort(hostHeader))
	if rt := matchPath(r.exact[host], path); rt != nil {
		return rt
	}
	for _, g := range r.wildcard {
		if len(host) > len(g.suffix) && strings.HasSuffix(host, g.suffix) {
			if rt := matchPath(g.routes, path); rt != nil {
				return rt
			}
		}
	}
	return matchPath(r.any, path)
}

func matchPath(routes []*Route, path string) *Route {
	for _, rt := range routes {
		if strings.HasPrefix(path, rt.Path) {
			return rt
		}
	}
	return nil
}

// stripPort removes a trailing ":port" from a Host header value, keeping
// IPv6 literals ("[::1]:80" → "[::1]") intact.
func stripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.IndexByte(host[i:], ']') >= 0 {
		return host
	}
	return host[:i]
}
