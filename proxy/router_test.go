package proxy

import (
	"testing"

	"github.com/wsgate/wsgate/upstream"
)

// routerCase is one request and the route it must match, named by the
// route's Pool name ("" for no match).
type routerCase struct {
	host, path, want string
}

// routerRoute builds a route whose pool is named after it, so a failing case
// says which route it got.
func routerRoute(host, path, name string) *Route {
	return &Route{Host: host, Path: path, Pool: upstream.NewPool(name, nil, upstream.Options{})}
}

func checkRouterCases(t *testing.T, r *Router, cases []routerCase) {
	t.Helper()
	for _, c := range cases {
		got := ""
		if rt := r.Match(c.host, c.path); rt != nil {
			got = rt.Pool.Name
		}
		if got != c.want {
			t.Errorf("Match(%q, %q) = %q, want %q", c.host, c.path, got, c.want)
		}
	}
}

func TestRouterHostPrecedence(t *testing.T) {
	// Given in the least specific order first, so the router's own ordering
	// is what is tested, not the config's.
	r := NewRouter([]*Route{
		routerRoute("", "/", "any"),
		routerRoute("*.example.com", "/", "wild"),
		routerRoute("*.b.example.com", "/", "wild-b"),
		routerRoute("a.example.com", "/", "exact"),
	})
	checkRouterCases(t, r, []routerCase{
		{"a.example.com", "/", "exact"},
		{"z.example.com", "/x", "wild"},
		{"a.b.example.com", "/", "wild-b"}, // the longest suffix wins
		{"c.d.example.com", "/", "wild"},   // deeper subdomains match too
		{"example.com", "/", "any"},        // "*.example.com" needs a label before
		{"xexample.com", "/", "any"},       // suffix must start at a dot
		{"other.org", "/", "any"},
		{"", "/", "any"},
	})
}

func TestRouterWildcardDepth(t *testing.T) {
	r := NewRouter([]*Route{routerRoute("*.example.com", "/", "wild")})
	checkRouterCases(t, r, []routerCase{
		{"a.example.com", "/", "wild"},
		{"a.b.example.com", "/", "wild"},
		{"example.com", "/", ""},
		{".example.com", "/", ""},
		{"example.com.evil.org", "/", ""},
	})
}

func TestRouterLongestPrefix(t *testing.T) {
	r := NewRouter([]*Route{
		routerRoute("", "/", "root"),
		routerRoute("", "/api/v1/", "v1"),
		routerRoute("", "/api/", "api"),
		routerRoute("h.test", "/socket", "hsock"),
		routerRoute("h.test", "/socket/admin", "hadmin"),
	})
	checkRouterCases(t, r, []routerCase{
		{"x", "/", "root"},
		{"x", "/api", "root"}, // "/api/" is not a prefix of "/api"
		{"x", "/api/", "api"},
		{"x", "/api/v1/users", "v1"},
		{"x", "/api/v2/users", "api"},
		{"h.test", "/socket/admin/x", "hadmin"},
		{"h.test", "/socket.io/", "hsock"},
		// The h.test group has no "/" route: fall through to the catch-all.
		{"h.test", "/other", "root"},
		{"h.test", "/api/v1/x", "v1"},
	})
}

func TestRouterHostForms(t *testing.T) {
	r := NewRouter([]*Route{
		routerRoute("WS.Example.COM", "/", "mixed"),
		routerRoute("[::1]", "/", "v6"),
		routerRoute("127.0.0.1", "/", "v4"),
		routerRoute("*.Wild.Test", "/", "wild"),
	})
	checkRouterCases(t, r, []routerCase{
		{"ws.example.com", "/", "mixed"},
		{"WS.EXAMPLE.COM:8080", "/", "mixed"},
		{"ws.example.com:443", "/", "mixed"},
		{"[::1]:8080", "/", "v6"},
		{"[::1]", "/", "v6"},
		{"[::2]:8080", "/", ""},
		{"127.0.0.1:80", "/", "v4"},
		{"A.WILD.test:9", "/", "wild"},
	})
}

func TestRouterFallThroughAndNoMatch(t *testing.T) {
	r := NewRouter([]*Route{
		routerRoute("ws.repo", "/ws", "ws"),
		routerRoute("*.repo", "/api", "wild-api"),
		routerRoute("", "/static", "static"),
	})
	checkRouterCases(t, r, []routerCase{
		{"ws.repo", "/ws/1", "ws"},
		{"ws.repo", "/api/x", "wild-api"}, // exact group has no match, wildcard has
		{"ws.repo", "/static/a.css", "static"},
		{"ws.repo", "/", ""},
		{"other.org", "/ws", ""},
		{"other.org", "/static", "static"},
	})
	if rt := NewRouter(nil).Match("any", "/"); rt != nil {
		t.Errorf("empty router matched %+v", rt)
	}
}

func TestStripPort(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":      "example.com",
		"example.com:8080": "example.com",
		"[::1]":            "[::1]",
		"[::1]:8080":       "[::1]",
		"[fe80::1%25en0]":  "[fe80::1%25en0]",
		"127.0.0.1:1":      "127.0.0.1",
		"":                 "",
	} {
		if got := stripPort(in); got != want {
			t.Errorf("stripPort(%q) = %q, want %q", in, got, want)
		}
	}
}
