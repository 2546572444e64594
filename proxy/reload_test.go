package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/syncbuf"
	"github.com/wsgate/wsgate/internal/testdns"
	"github.com/wsgate/wsgate/internal/testport"
)

// echoOrName is an upstream that echoes WebSocket messages and answers
// any other request with its name, so a test sees where a request went.
func echoOrName(t testing.TB, name string) string {
	t.Helper()
	echo := echoHandler(websocket.Upgrader{})
	return serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if websocket.IsWebSocketUpgrade(r) {
			echo.ServeHTTP(w, r)
			return
		}
		io.WriteString(w, name)
	}))
}

// freeAddr is a 127.0.0.1 address with a port free now, for a listener a
// configuration file names.
func freeAddr(t testing.TB) string {
	t.Helper()
	port, err := testport.Free()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// writeFile writes a configuration file.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startFromFile starts a gateway on the configuration file at path, as
// wsgate -config does, so that Reload reads it again.
func startFromFile(t testing.TB, path string, accessLog io.Writer) *Gateway {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return startGatewayOpts(t, cfg, Options{AccessLog: accessLog, ErrorLog: testLog{t}, ConfigPath: path})
}

// get sends GET path to addr and returns the status and body; status 0
// when the connection failed.
func get(addr, path string) (int, string) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// echoer keeps one tunnel echoing: every message carries the tunnel's
// number and a sequence number, and each echo must come back whole and in
// order. Both directions are hashed, so a lost, repeated or reordered
// byte shows even where a message check would miss it.
type echoer struct {
	id         int
	conn       *websocket.Conn
	sent, got  int
	up, down   [32]byte
	upHash     hashState
	downHash   hashState
	failure    error
	stopped    chan struct{}
	stoppedSet sync.Once
}

type hashState = interface {
	io.Writer
	Sum([]byte) []byte
}

func newEchoer(id int, conn *websocket.Conn) *echoer {
	return &echoer{id: id, conn: conn, upHash: sha256.New(), downHash: sha256.New(), stopped: make(chan struct{})}
}

// once sends one message and reads its echo.
func (e *echoer) once() error {
	msg := make([]byte, 16+e.sent%48)
	binary.BigEndian.PutUint64(msg, uint64(e.id))
	binary.BigEndian.PutUint64(msg[8:], uint64(e.sent))
	e.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	e.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := e.conn.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		return fmt.Errorf("tunnel %d: write %d: %w", e.id, e.sent, err)
	}
	e.upHash.Write(msg)
	e.sent++
	_, echo, err := e.conn.ReadMessage()
	if err != nil {
		return fmt.Errorf("tunnel %d: read echo %d: %w", e.id, e.got, err)
	}
	e.downHash.Write(echo)
	if !bytes.Equal(echo, msg) {
		return fmt.Errorf("tunnel %d: echo %d is %x, sent %x", e.id, e.got, echo, msg)
	}
	e.got++
	return nil
}

// run echoes until stop is closed.
func (e *echoer) run(stop <-chan struct{}) {
	defer close(e.stopped)
	for {
		select {
		case <-stop:
			e.failure = e.once() // one more after the last reload
			return
		default:
		}
		if err := e.once(); err != nil {
			e.failure = err
			return
		}
	}
}

// reloadFiles are two configurations a reload test alternates: b removes
// a's second server, second listener and route /a, and adds route /b, a
// third listener and a weight.
type reloadFiles struct {
	main, onlyA, onlyB string // listener addresses
	drain              string
	server1, server2   string
}

func (f reloadFiles) content(variantB bool) string {
	listeners := "  - address: " + f.main + "\n"
	routes := "  - path: /ws\n    upstream: chat\n"
	servers := "      - address: " + f.server1 + "\n"
	if variantB {
		listeners += "  - address: " + f.onlyB + "\n"
		routes += "  - path: /b\n    upstream: chat\n"
		servers = "      - address: " + f.server1 + "\n        weight: 3\n"
	} else {
		listeners += "  - address: " + f.onlyA + "\n"
		routes += "  - path: /a\n    upstream: chat\n"
		servers += "      - address: " + f.server2 + "\n"
	}
	return "listeners:\n" + listeners + "routes:\n" + routes +
		"upstreams:\n  chat:\n    balance: round_robin\n    servers:\n" + servers +
		"timeouts:\n  drain: " + f.drain + "\n"
}

// TestReloadUnderLoad reloads the file 50 times, alternating two files
// that add and remove a route, a listener and a server and change a
// weight, while tunnels echo without pause: no tunnel drops, no byte is
// lost or reordered either way, each added route and listener serves as
// soon as Reload returns and each removed listener refuses.
func TestReloadUnderLoad(t *testing.T) {
	tunnels := 2000
	if testing.Short() {
		tunnels = 200
	}
	const reloads = 50
	dir := t.TempDir()
	f := reloadFiles{
		main: freeAddr(t), onlyA: freeAddr(t), onlyB: freeAddr(t), drain: "1h",
		server1: echoOrName(t, "one"), server2: echoOrName(t, "two"),
	}
	path := filepath.Join(dir, "wsgate.yaml")
	writeFile(t, path, f.content(false))
	g := startFromFile(t, path, io.Discard)

	echoers := make([]*echoer, tunnels)
	for i := range echoers {
		echoers[i] = newEchoer(i, dial(t, f.main, "/ws", nil))
	}
	stop := make(chan struct{})
	for _, e := range echoers {
		go e.run(stop)
	}
	var slowest time.Duration
	for i := 1; i <= reloads; i++ {
		variantB := i%2 == 1
		writeFile(t, path, f.content(variantB))
		start := time.Now()
		if _, err := g.Reload(); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		added, removed, gone, kept := "/b", "/a", f.onlyA, f.onlyB
		if !variantB {
			added, removed, gone, kept = "/a", "/b", f.onlyB, f.onlyA
		}
		if status, body := get(f.main, added); status != 200 || body != "one" && body != "two" {
			t.Fatalf("reload %d: GET %s: %d %q", i, added, status, body)
		}
		slowest = max(slowest, time.Since(start))
		if status, _ := get(f.main, removed); status != 404 {
			t.Fatalf("reload %d: GET %s (removed): %d, want 404", i, removed, status)
		}
		if status, body := get(kept, "/ws"); status != 200 {
			t.Fatalf("reload %d: the added listener %s: %d %q", i, kept, status, body)
		}
		if c, err := net.Dial("tcp", gone); err == nil {
			c.Close()
			t.Fatalf("reload %d: the removed listener %s accepts", i, gone)
		}
	}
	close(stop)
	for _, e := range echoers {
		<-e.stopped
	}
	dropped := 0
	for _, e := range echoers {
		if e.failure != nil {
			dropped++
			if dropped <= 5 {
				t.Error(e.failure)
			}
			continue
		}
		if !bytes.Equal(e.upHash.Sum(nil), e.downHash.Sum(nil)) || e.sent != e.got {
			t.Errorf("tunnel %d: sent %d messages, %d echoed; hashes differ", e.id, e.sent, e.got)
		}
	}
	var messages int
	for _, e := range echoers {
		messages += e.got
	}
	t.Logf("%d tunnels, %d reloads: %d dropped, %d messages echoed; slowest reload to added route answering: %v",
		tunnels, reloads, dropped, messages, slowest)
	if dropped > 0 {
		t.Fatalf("%d of %d tunnels dropped across the reloads", dropped, tunnels)
	}
	if live := g.ActiveTunnels(); live != tunnels {
		t.Fatalf("%d live tunnels after the reloads, want %d", live, tunnels)
	}
}

// TestReloadKeepsLongPolls: requests in flight across a reload, even on a
// route the reload removes, complete with their answer.
func TestReloadKeepsLongPolls(t *testing.T) {
	const polls = 200
	release := make(chan struct{})
	var arrived atomic.Int32
	all := make(chan struct{})
	backend := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == polls {
			close(all)
		}
		<-release
		io.WriteString(w, "answer "+r.URL.Query().Get("n"))
	}))
	dir := t.TempDir()
	path := filepath.Join(dir, "wsgate.yaml")
	addr := freeAddr(t)
	file := func(route string) string {
		return "listeners:\n  - address: " + addr + "\nroutes:\n  - path: " + route + "\n    upstream: poll\n" +
			"upstreams:\n  poll:\n    servers:\n      - address: " + backend + "\n"
	}
	writeFile(t, path, file("/poll"))
	g := startFromFile(t, path, io.Discard)

	type result struct {
		n      int
		status int
		body   string
	}
	results := make(chan result, polls)
	for n := range polls {
		go func() {
			status, body := get(addr, fmt.Sprintf("/poll?n=%d", n))
			results <- result{n, status, body}
		}()
	}
	select {
	case <-all:
	case <-time.After(time.Minute):
		t.Fatalf("only %d of %d long-polls reached the backend", arrived.Load(), polls)
	}
	writeFile(t, path, file("/other"))
	if _, err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if status, _ := get(addr, "/poll?n=late"); status != 404 {
		t.Fatalf("a new request on the removed route: %d, want 404", status)
	}
	close(release)
	for range polls {
		r := <-results
		if want := fmt.Sprintf("answer %d", r.n); r.status != 200 || r.body != want {
			t.Errorf("long-poll %d: %d %q, want 200 %q", r.n, r.status, r.body, want)
		}
	}
}

// TestReloadEndsTunnelsOfRemovedServer: a server the reload removed gets
// no new tunnels, and its live ones end with Close 1001 on both sides at
// timeouts.drain after the reload, logged closed_by=reload; the other
// server's tunnels are untouched.
func TestReloadEndsTunnelsOfRemovedServer(t *testing.T) {
	closes := make(chan int, 16)
	// The server to remove: answers every message with "removed" and
	// reports the close code it receives.
	removed := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			if _, _, err := c.ReadMessage(); err == nil {
				c.WriteMessage(websocket.TextMessage, []byte("removed"))
			} else {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					closes <- ce.Code
				} else {
					closes <- -1
				}
				return
			}
		}
	}))
	kept := echoOrName(t, "kept")
	dir := t.TempDir()
	path := filepath.Join(dir, "wsgate.yaml")
	addr := freeAddr(t)
	file := func(servers ...string) string {
		s := "listeners:\n  - address: " + addr + "\nroutes:\n  - path: /\n    upstream: chat\n" +
			"upstreams:\n  chat:\n    balance: round_robin\n    servers:\n"
		for _, srv := range servers {
			s += "      - address: " + srv + "\n"
		}
		return s + "timeouts:\n  drain: 1s\n"
	}
	writeFile(t, path, file(removed, kept))
	var log syncbuf.Buffer
	g := startFromFile(t, path, &log)

	var onRemoved, onKept []*websocket.Conn
	for range 4 {
		c := dial(t, addr, "/", nil)
		c.WriteMessage(websocket.TextMessage, []byte("which"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, msg, err := c.ReadMessage()
		switch {
		case err != nil:
			t.Fatal(err)
		case string(msg) == "removed":
			onRemoved = append(onRemoved, c)
		default:
			onKept = append(onKept, c)
		}
	}
	if len(onRemoved) != 2 || len(onKept) != 2 {
		t.Fatalf("round robin placed %d tunnels on the server to remove and %d on the other, want 2 and 2", len(onRemoved), len(onKept))
	}
	writeFile(t, path, file(kept))
	reloaded := time.Now()
	if _, err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	// New tunnels go to the kept server only.
	for range 3 {
		c := dial(t, addr, "/", nil)
		c.WriteMessage(websocket.TextMessage, []byte("new"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "new" {
			t.Fatalf("a tunnel after the reload: %q %v, want the kept server's echo", msg, err)
		}
		c.Close()
	}
	for i, c := range onRemoved {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _, err := c.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("client %d of the removed server: %v, want close 1001", i, err)
		}
		if waited := time.Since(reloaded); waited < time.Second {
			t.Errorf("client %d closed %v after the reload, before timeouts.drain (1s)", i, waited)
		}
	}
	for range onRemoved {
		select {
		case code := <-closes:
			if code != websocket.CloseGoingAway {
				t.Errorf("the removed server saw close %d, want 1001", code)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the removed server saw no close")
		}
	}
	for i, c := range onKept {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.WriteMessage(websocket.TextMessage, []byte("still"))
		if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "still" {
			t.Fatalf("tunnel %d of the kept server after the drain: %q %v", i, msg, err)
		}
	}
	waitFor(t, "closed_by=reload in the access log", func() bool {
		return strings.Count(log.String(), "closed_by=reload") == len(onRemoved)
	})
}

// TestReloadRefusesBrokenFiles: a file that does not parse, an unknown
// key, an address that cannot be bound and a certificate that does not
// load each get 400 from POST /reload naming FILE:LINE, and the
// configuration in service keeps serving every socket it had.
func TestReloadRefusesBrokenFiles(t *testing.T) {
	backend := echoOrName(t, "backend")
	dir := t.TempDir()
	path := filepath.Join(dir, "wsgate.yaml")
	addr := freeAddr(t)
	good := "listeners:\n  - address: " + addr + "\nroutes:\n  - path: /\n    upstream: app\n" +
		"upstreams:\n  app:\n    servers:\n      - address: " + backend + "\n" +
		"admin:\n  address: " + freeAddr(t) + "\n"
	writeFile(t, path, good)
	g := startFromFile(t, path, io.Discard)
	admin := g.AdminAddr().String()
	tunnel := dial(t, addr, "/", nil)

	taken := listenLocal(t).Addr().String()
	badCert := filepath.Join(dir, "bad.pem")
	writeFile(t, badCert, "not a certificate\n")
	cases := []struct{ name, content, want string }{
		{"bad YAML", good + "routes: [\n", path + ":"},
		{"unknown key", good + "limits:\n  max_header_byte: 1\n", path + ":13: limits.max_header_byte"},
		{"address in use", strings.Replace(good, "listeners:\n", "listeners:\n  - address: "+taken+"\n", 1),
			path + ":2: listeners[0].address: listen tcp " + taken},
		{"bad certificate", strings.Replace(good, "listeners:\n", "listeners:\n  - address: "+freeAddr(t)+"\n    tls:\n      certificates:\n"+
			"        - cert_file: "+badCert+"\n          key_file: "+badCert+"\n", 1), path + ":5: listeners[0].tls.certificates[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			writeFile(t, path, tc.content)
			resp, err := http.Post("http://"+admin+"/reload", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(body), tc.want) {
				t.Fatalf("POST /reload: %d %q, want 400 naming %q", resp.StatusCode, body, tc.want)
			}
			if status, body := get(addr, "/x"); status != 200 || body != "backend" {
				t.Fatalf("after the refused reload: %d %q", status, body)
			}
			tunnel.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := tunnel.WriteMessage(websocket.TextMessage, []byte(tc.name)); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := tunnel.ReadMessage(); err != nil || string(msg) != tc.name {
				t.Fatalf("the live tunnel after the refused reload: %q %v", msg, err)
			}
		})
	}
	writeFile(t, path, good)
	resp, err := http.Post("http://"+admin+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "reload ok: routes +0 -0") {
		t.Fatalf("POST /reload of the good file: %d %q", resp.StatusCode, body)
	}
}

// TestHealthAndReadiness: /healthz answers while the process runs;
// /readyz is 503 naming the pool whose only server is down, and 200 once
// a reload gives it a usable one.
func TestHealthAndReadiness(t *testing.T) {
	backend := echoOrName(t, "backend")
	dir := t.TempDir()
	path := filepath.Join(dir, "wsgate.yaml")
	adminAddr, addr := freeAddr(t), freeAddr(t)
	file := func(down bool) string {
		s := "listeners:\n  - address: " + addr + "\nroutes:\n  - path: /\n    upstream: app\n" +
			"upstreams:\n  app:\n    servers:\n      - address: " + backend + "\n"
		if down {
			s += "        down: true\n"
		}
		return s + "admin:\n  address: " + adminAddr + "\n"
	}
	writeFile(t, path, file(true))
	g := startFromFile(t, path, io.Discard)
	admin := g.AdminAddr().String()
	if status, body := get(admin, "/healthz"); status != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", status, body)
	}
	if status, body := get(admin, "/readyz"); status != 503 || !strings.Contains(body, "upstream app has no usable server") {
		t.Fatalf("/readyz with the only server down: %d %q", status, body)
	}
	writeFile(t, path, file(false))
	if _, err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if status, body := get(admin, "/readyz"); status != 200 || body != "ready\n" {
		t.Fatalf("/readyz: %d %q", status, body)
	}
	if status, _ := get(admin, "/reload"); status != http.StatusMethodNotAllowed {
		t.Fatalf("GET /reload: %d, want 405", status)
	}
}

// TestReloadRace reloads in a loop while handshakes and HTTP requests run;
// run with -race, it shows any state that a reload rewrites under readers.
func TestReloadRace(t *testing.T) {
	one, two := echoOrName(t, "one"), echoOrName(t, "two")
	dir := t.TempDir()
	path := filepath.Join(dir, "wsgate.yaml")
	addr := freeAddr(t)
	file := func(i int) string {
		return fmt.Sprintf("listeners:\n  - address: %s\nroutes:\n  - path: /\n    upstream: app\n"+
			"upstreams:\n  app:\n    balance: %s\n    servers:\n      - address: %s\n        weight: %d\n        max_conns: %d\n      - address: %s\n"+
			"timeouts:\n  handshake: %ds\n  idle: %dh\n", addr, []string{"round_robin", "least_conn", "hash"}[i%3], one, 1+i%3, 100+i, two, 5+i%2, 1+i%2)
	}
	writeFile(t, path, file(0))
	g := startFromFile(t, path, io.Discard)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failures atomic.Int32
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if w%2 == 0 {
					if status, _ := get(addr, "/x"); status != 200 {
						failures.Add(1)
					}
					continue
				}
				c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
				if err != nil {
					failures.Add(1)
					continue
				}
				c.WriteMessage(websocket.TextMessage, []byte("x"))
				c.ReadMessage()
				c.Close()
			}
		}()
	}
	for i := 1; i <= 30; i++ {
		writeFile(t, path, file(i))
		if _, err := g.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d requests or handshakes failed across the reloads", n)
	}
}

// TestReloadsDoNotGrow: after many reloads that change the listeners'
// server settings, the pools and the routes, the goroutines are back to
// what one reload leaves, and the replaced generations are garbage:
// nothing a generation started or built outlives it.
func TestReloadsDoNotGrow(t *testing.T) {
	reloads := 200
	if testing.Short() {
		reloads = 20
	}
	if n, err := strconv.Atoi(os.Getenv("WSGATE_TEST_RELOADS")); err == nil {
		reloads = n // for a longer measurement
	}
	one := echoOrName(t, "one")
	dir := t.TempDir()
	path := filepath.Join(dir, "wsgate.yaml")
	addr := freeAddr(t)
	file := func(i int) string {
		return fmt.Sprintf("listeners:\n  - address: %s\nroutes:\n  - path: /r%d\n    upstream: app%d\n"+
			"upstreams:\n  app%d:\n    servers:\n      - address: %s\n    health_check:\n      path: /\n      interval: 1h\n"+
			"timeouts:\n  handshake: %ds\n  drain: 100ms\n", addr, i%2, i%2, i%2, one, 5+i%2)
	}
	writeFile(t, path, file(0))
	g := startFromFile(t, path, io.Discard)
	reload := func(i int) {
		writeFile(t, path, file(i))
		if _, err := g.Reload(); err != nil {
			t.Fatal(err)
		}
		if status, body := get(addr, fmt.Sprintf("/r%d", i%2)); status != 200 || body != "one" {
			t.Fatalf("reload %d: %d %q", i, status, body)
		}
	}
	reload(1)
	// The generation of reload 1, with everything it reaches (router,
	// pools, clients, servers of listeners), must be collected once
	// replaced.
	first := weak.Make(g.gen.Load())
	settle := func() int {
		// Replaced servers (fasthttp checks every 100 ms whether its
		// connections are done) and health checkers end on their own
		// goroutines: wait until the count has not fallen for 500 ms.
		n, still := runtime.NumGoroutine(), 0
		for range 400 {
			time.Sleep(50 * time.Millisecond)
			m := runtime.NumGoroutine()
			if m < n {
				n, still = m, 0
				continue
			}
			if still++; still == 10 {
				break
			}
		}
		return n
	}
	base, baseRSS := settle(), rssKiB(t)
	for i := 2; i <= reloads; i++ {
		reload(i)
	}
	var after int
	waitFor(t, "goroutines back to the level after one reload", func() bool {
		after = settle()
		return after <= base+base/20+2
	})
	waitFor(t, "the first generation collected", func() bool {
		runtime.GC()
		return first.Value() == nil
	})
	t.Logf("after 1 reload: %d goroutines, RSS %d KiB; after %d: %d goroutines, RSS %d KiB", base, baseRSS, reloads, after, rssKiB(t))
}

// rssKiB is the test process's resident set size once the garbage is
// collected and returned to the OS.
func rssKiB(t testing.TB) int {
	debug.FreeOSMemory()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	return 0
}

// A reload that moves admin.address binds the new address (where the
// answer to that very POST /reload came from does not matter) and closes
// the old one once its answer is sent.
func TestReloadMovesAdminListener(t *testing.T) {
	backend := echoOrName(t, "backend")
	dir := t.TempDir()
	path := filepath.Join(dir, "wsgate.yaml")
	addr, oldAdmin, newAdmin := freeAddr(t), freeAddr(t), freeAddr(t)
	file := func(admin string) string {
		return "listeners:\n  - address: " + addr + "\nroutes:\n  - path: /\n    upstream: app\n" +
			"upstreams:\n  app:\n    servers:\n      - address: " + backend + "\n" +
			"admin:\n  address: " + admin + "\n"
	}
	writeFile(t, path, file(oldAdmin))
	g := startFromFile(t, path, io.Discard)
	writeFile(t, path, file(newAdmin))
	resp, err := http.Post("http://"+oldAdmin+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /reload on the old admin address: %d %q", resp.StatusCode, body)
	}
	if status, body := get(newAdmin, "/healthz"); status != 200 {
		t.Fatalf("/healthz on the new admin address: %d %q", status, body)
	}
	if got := g.AdminAddr().String(); got != newAdmin {
		t.Fatalf("AdminAddr = %s, want %s", got, newAdmin)
	}
	waitListenerClosed(t, oldAdmin)
}

// TestRediscoveryRacesHandshakes: DNS rediscovery publishes new settings
// for the servers it keeps (SRV weights and priorities) while handshakes
// pick, lease and release them; with -race it shows any setting written
// under readers. Every handshake must succeed.
func TestRediscoveryRacesHandshakes(t *testing.T) {
	z := testdns.Start(t)
	one, two := echoOrName(t, "one"), echoOrName(t, "two")
	_, port1, _ := net.SplitHostPort(one)
	_, port2, _ := net.SplitHostPort(two)
	z.Set("a.app.test", "A 127.0.0.1")
	srv := func(w1, w2, prio2 int) {
		z.Set("_ws._tcp.app.test",
			fmt.Sprintf("SRV 10 %d %s a.app.test.", w1, port1),
			fmt.Sprintf("SRV %d %d %s a.app.test.", prio2, w2, port2))
	}
	srv(1, 1, 10)
	cfg := configFor()
	cfg.Resolver = z.Addr
	cfg.Upstreams["backend"].Servers = []config.Server{{SRV: "_ws._tcp.app.test", MaxConns: 50}}
	cfg.Upstreams["backend"].ResolveInterval = config.Duration(5 * time.Millisecond)
	cfg.ApplyDefaults()
	g := startGateway(t, cfg)
	addr := g.Addrs()[0].String()

	stop := make(chan struct{})
	flipped := make(chan int)
	go func() {
		n := 0
		defer func() { flipped <- n }()
		for ; n < 2000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			// Both servers stay; their weights and the second one's
			// tier change, so rediscovery publishes new settings.
			srv(1+n%5, 1+n%3, 10+10*(n%2))
			time.Sleep(time.Millisecond) // pace the zone changes, not a wait for an event
		}
	}()
	var wg sync.WaitGroup
	var failures atomic.Int32
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
				if err != nil {
					failures.Add(1)
					continue
				}
				c.WriteMessage(websocket.TextMessage, []byte("x"))
				if _, _, err := c.ReadMessage(); err != nil {
					failures.Add(1)
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(stop)
	t.Logf("%d zone changes during 400 handshakes; %d DNS queries answered", <-flipped, z.Queries.Load())
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of 400 handshakes failed while DNS changed", n)
	}
}
