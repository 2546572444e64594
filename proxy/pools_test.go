package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/config"
)

// namedServer is an upstream that says who it is: GET /who answers its
// name, a WebSocket gets its name as the first message and then echoes,
// GET /health answers the status in health.
type namedServer struct {
	name   string
	addr   string
	srv    *http.Server
	health atomic.Int32

	mu      sync.Mutex
	tunnels []*websocket.Conn // hijacked: http.Server.Close leaves them open
}

func startNamed(t *testing.T, name string) *namedServer {
	t.Helper()
	n := &namedServer{name: name}
	n.health.Store(200)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = ln.Addr().String()
	n.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/health":
			w.WriteHeader(int(n.health.Load()))
		case websocket.IsWebSocketUpgrade(r):
			u := websocket.Upgrader{}
			c, err := u.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			n.mu.Lock()
			n.tunnels = append(n.tunnels, c)
			n.mu.Unlock()
			c.WriteMessage(websocket.TextMessage, []byte(name))
			for {
				mt, msg, err := c.ReadMessage()
				if err != nil || c.WriteMessage(mt, msg) != nil {
					return
				}
			}
		default:
			io.WriteString(w, name)
		}
	})}
	go n.srv.Serve(ln)
	t.Cleanup(n.stop)
	return n
}

// stop kills the server: listener and every connection, tunnels included.
func (n *namedServer) stop() {
	n.srv.Close()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.tunnels {
		c.Close()
	}
}

// poolConfig is a catch-all route to an upstream of the named servers,
// with the file defaults applied and then changed by adjust.
func poolConfig(servers []*namedServer, adjust func(u *config.Upstream)) *config.Config {
	cfg := &config.Config{
		Listeners: []config.Listener{{Address: "127.0.0.1:0"}},
		Routes:    []config.Route{{Path: "/", Upstream: "pool"}},
		Upstreams: map[string]*config.Upstream{"pool": {}},
		Timeouts:  testTimeouts,
	}
	for _, s := range servers {
		cfg.Upstreams["pool"].Servers = append(cfg.Upstreams["pool"].Servers, config.Server{Address: s.addr})
	}
	if adjust != nil {
		adjust(cfg.Upstreams["pool"])
	}
	cfg.ApplyDefaults()
	return cfg
}

// who asks the gateway which server answers GET /who, with cookie sent if
// not empty; it returns the name and the Set-Cookie header.
func who(t *testing.T, gw, cookie string) (name, setCookie string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+gw+"/who", nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /who: %d %s", resp.StatusCode, body)
	}
	return string(body), resp.Header.Get("Set-Cookie")
}

// wsWho opens a tunnel and returns the name its server greets with.
func wsWho(t *testing.T, gw, path string, hdr http.Header) (string, *websocket.Conn, *http.Response) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+gw+path, hdr)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	return string(msg), c, resp
}

func cookieValue(setCookie string) string {
	v, _, _ := strings.Cut(setCookie, ";")
	return v
}

func TestStickyCookie(t *testing.T) {
	servers := []*namedServer{startNamed(t, "a"), startNamed(t, "b"), startNamed(t, "c")}
	byName := map[string]*namedServer{}
	for _, s := range servers {
		byName[s.name] = s
	}
	gw := startGateway(t, poolConfig(servers, func(u *config.Upstream) {
		u.Balance = "round_robin"
		u.StickyCookie = "wsgate_srv"
	})).Addrs()[0].String()

	first, set := who(t, gw, "")
	if !strings.HasPrefix(set, "wsgate_srv=") || !strings.Contains(set, "HttpOnly") ||
		!strings.Contains(set, "Path=/") || !strings.Contains(set, "SameSite=Lax") {
		t.Fatalf("first answer's Set-Cookie %q", set)
	}
	cookie := cookieValue(set)
	for i := range 20 {
		if name, again := who(t, gw, cookie); name != first || again != "" {
			t.Fatalf("request %d with the cookie went to %s (Set-Cookie %q), want %s and no new cookie", i, name, again, first)
		}
	}
	if name, _, resp := wsWho(t, gw, "/ws", http.Header{"Cookie": {cookie}}); name != first || resp.Header.Get("Set-Cookie") != "" {
		t.Fatalf("upgrade with the cookie reached %s (Set-Cookie %q), want %s", name, resp.Header.Get("Set-Cookie"), first)
	}
	// A WebSocket without the cookie gets one in its 101.
	if _, _, resp := wsWho(t, gw, "/ws", nil); !strings.HasPrefix(resp.Header.Get("Set-Cookie"), "wsgate_srv=") {
		t.Fatalf("101 without a cookie: Set-Cookie %q", resp.Header.Get("Set-Cookie"))
	}
	// A forged token falls back to the balancer and is replaced.
	if _, set := who(t, gw, "wsgate_srv=forged"); !strings.HasPrefix(set, "wsgate_srv=") || cookieValue(set) == "wsgate_srv=forged" {
		t.Fatalf("forged token: Set-Cookie %q", set)
	}
	// The pinned server dies: the next request goes elsewhere, with a new cookie.
	byName[first].stop()
	name, set := who(t, gw, cookie)
	if name == first || set == "" || cookieValue(set) == cookie {
		t.Fatalf("after %s died: answered by %s, Set-Cookie %q", first, name, set)
	}
	if again, _ := who(t, gw, cookieValue(set)); again != name {
		t.Fatalf("the rewritten cookie leads to %s, want %s", again, name)
	}
}

func TestHashOnQueryID(t *testing.T) {
	servers := []*namedServer{startNamed(t, "a"), startNamed(t, "b"), startNamed(t, "c")}
	gw := startGateway(t, poolConfig(servers, func(u *config.Upstream) {
		u.Balance = "hash"
		u.HashKey = "query:Id"
	})).Addrs()[0].String()
	first, _, _ := wsWho(t, gw, "/ws?Id=alice", nil)
	for range 20 {
		if name, c, _ := wsWho(t, gw, "/ws?Id=alice", nil); name != first {
			t.Fatalf("Id=alice went to %s and %s", first, name)
		} else {
			c.Close()
		}
	}
	seen := map[string]int{}
	for i := range 30 {
		name, c, _ := wsWho(t, gw, fmt.Sprintf("/ws?Id=user%d", i), nil)
		c.Close()
		seen[name]++
	}
	t.Logf("30 ids over 3 servers: %v", seen)
	if len(seen) < 3 {
		t.Fatalf("30 ids reached only %v", seen)
	}
}

func TestLeastConnFillsTheEmptiedServer(t *testing.T) {
	servers := []*namedServer{startNamed(t, "a"), startNamed(t, "b"), startNamed(t, "c")}
	g := startGateway(t, poolConfig(servers, nil)) // least_conn is the default
	gw := g.Addrs()[0].String()
	conns := map[string][]*websocket.Conn{}
	for range 30 {
		name, c, _ := wsWho(t, gw, "/ws", nil)
		conns[name] = append(conns[name], c)
	}
	for name, cs := range conns {
		if len(cs) != 10 {
			t.Fatalf("30 tunnels: %s has %d, want 10 each", name, len(cs))
		}
	}
	for _, c := range conns["b"] {
		c.Close()
	}
	waitFor(t, "b's tunnels closed", func() bool { return g.ActiveTunnels() == 20 })
	for range 10 {
		if name, _, _ := wsWho(t, gw, "/ws", nil); name != "b" {
			t.Fatalf("new tunnel went to %s, want the emptied b", name)
		}
	}
}

// hangUpServer accepts connections and closes them at once, counting them.
func hangUpServer(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().String(), &n
}

// One of three servers dies during a stream of handshakes: no client sees
// a failure (retries), and passive health keeps the dead one out.
func TestPassiveHealthAndRetries(t *testing.T) {
	a, b := startNamed(t, "a"), startNamed(t, "b")
	broken, attempts := hangUpServer(t)
	cfg := poolConfig([]*namedServer{a, b}, func(u *config.Upstream) { u.Balance = "round_robin" })
	cfg.Upstreams["pool"].Servers = append(cfg.Upstreams["pool"].Servers, config.Server{Address: broken})
	cfg.ApplyDefaults()
	gw := startGateway(t, cfg).Addrs()[0].String()
	for i := range 300 {
		if i == 100 {
			b.stop() // killed mid-stream
		}
		c, _, err := websocket.DefaultDialer.Dial("ws://"+gw+"/ws", nil)
		if err != nil {
			t.Fatalf("handshake %d: %v", i, err)
		}
		c.Close()
	}
	// max_fails 1, fail_timeout 10s: one failed attempt takes it out.
	if n := attempts.Load(); n != 1 {
		t.Fatalf("the broken server got %d attempts, want 1 within fail_timeout", n)
	}
}

func TestMaxConnsAndBackup(t *testing.T) {
	a, backup := startNamed(t, "a"), startNamed(t, "backup")
	cfg := poolConfig([]*namedServer{a, backup}, nil)
	cfg.Upstreams["pool"].Servers[0].MaxConns = 1
	cfg.Upstreams["pool"].Servers[1].Backup = true
	g := startGateway(t, cfg)
	gw := g.Addrs()[0].String()

	name, first, _ := wsWho(t, gw, "/ws", nil)
	if name != "a" {
		t.Fatalf("first tunnel on %s", name)
	}
	// a is full but up: 503 with Retry-After, not the backup.
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+gw+"/ws", nil)
	if err == nil || resp == nil || resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second tunnel with a full: %v, %+v", err, resp)
	}
	// a dies, and with it its tunnel (the client hangs up when its
	// tunnel breaks): the backup takes over.
	a.stop()
	first.Close()
	waitFor(t, "a's tunnel ended", func() bool { return g.ActiveTunnels() == 0 })
	if name, _, _ := wsWho(t, gw, "/ws", nil); name != "backup" {
		t.Fatalf("with a down, tunnel on %s", name)
	}
}

func TestActiveHealthCheck(t *testing.T) {
	a, b := startNamed(t, "a"), startNamed(t, "b")
	gw := startGateway(t, poolConfig([]*namedServer{a, b}, func(u *config.Upstream) {
		u.Balance = "round_robin"
		// Two failures in a row take a server out, so one probe of b
		// that a loaded machine answers late does not.
		u.HealthCheck = &config.HealthCheck{Path: "/health", Interval: config.Duration(500 * time.Millisecond),
			Timeout: config.Duration(500 * time.Millisecond), Healthy: 1, Unhealthy: 2}
	})).Addrs()[0].String()
	a.health.Store(500)
	// Round robin alternates while both are up: two answers in a row from
	// b mean a is out.
	waitFor(t, "a out of rotation", func() bool {
		first, _ := who(t, gw, "")
		second, _ := who(t, gw, "")
		return first == "b" && second == "b"
	})
	for range 10 {
		if name, _ := who(t, gw, ""); name != "b" {
			t.Fatalf("request reached %s, whose health check fails", name)
		}
	}
	a.health.Store(200)
	var mu sync.Mutex
	seen := map[string]bool{}
	waitFor(t, "a back in rotation", func() bool {
		name, _ := who(t, gw, "")
		mu.Lock()
		defer mu.Unlock()
		seen[name] = true
		return seen["a"]
	})
}

// max_conns holds under a burst: the lease is taken when the server is
// picked, atomically, so handshakes still in flight count and twenty at
// once on a server with max_conns 5 give five tunnels and fifteen 503s.
func TestMaxConnsHoldsUnderABurst(t *testing.T) {
	var upgrades, handling atomic.Int32
	slow := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handling.Add(1)
		defer handling.Add(-1)
		time.Sleep(300 * time.Millisecond) // the handshake is in flight meanwhile
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		upgrades.Add(1)
		defer c.Close()
		c.ReadMessage() // hold the tunnel until the client closes
	}))
	cfg := configFor(slow)
	cfg.Upstreams["backend"].Servers[0].MaxConns = 5
	cfg.ApplyDefaults()
	addr := startGateway(t, cfg).Addrs()[0].String()

	var wg sync.WaitGroup
	var opened, full atomic.Int32
	var conns sync.Map
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
			c, resp, err := d.Dial("ws://"+addr+"/", nil)
			switch {
			case err == nil:
				opened.Add(1)
				conns.Store(i, c)
			case resp != nil && resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "1":
				full.Add(1)
			default:
				t.Errorf("dial %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	conns.Range(func(_, c any) bool { c.(*websocket.Conn).Close(); return true })
	// The client may see its 101 before the upstream handler has counted
	// the upgrade it just wrote: the count is final once every handler that
	// was reached has returned (each tunnel ends with its client).
	waitFor(t, "upstream handlers returned", func() bool { return handling.Load() == 0 })
	if opened.Load() != 5 || full.Load() != 15 || upgrades.Load() != 5 {
		t.Fatalf("opened %d, 503 %d, upstream upgrades %d; want 5, 15, 5", opened.Load(), full.Load(), upgrades.Load())
	}
}
