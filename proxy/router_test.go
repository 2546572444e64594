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
func routerRoute(t *testing.T, host, path, name string) *Route {
	t.Helper()
	pool, err := upstream.NewPool(name, nil, upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &Route{Host: host, Path: path, Pool: pool}
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
		routerRoute(t, "", "/", "any"),
		routerRoute(t, "*.example.com", "/", "wild"),
		routerRoute(t, "*.b.example.com", "/", "wild-b"),
		routerRoute(t, "a.example.com", "/", "exact"),
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
	r := NewRouter([]*Route{routerRoute(t, "*.example.com", "/", "wild")})
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
		routerRoute(t, "", "/", "root"),
		routerRoute(t, "", "/api/v1/", "v1"),
		routerRoute(t, "", "/api/", "api"),
		routerRoute(t, "h.test", "/socket", "hsock"),
		routerRoute(t, "h.test", "/socket/admin", "hadmin"),
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
		routerRoute(t, "WS.Example.COM", "/", "mixed"),
		routerRoute(t, "[::1]", "/", "v6"),
		routerRoute(t, "127.0.0.1", "/", "v4"),
		routerRoute(t, "*.Wild.Test", "/", "wild"),
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
		routerRoute(t, "ws.repo", "/ws", "ws"),
		routerRoute(t, "*.repo", "/api", "wild-api"),
		routerRoute(t, "", "/static", "static"),
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
