package e2e

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// Many wsgates (docs/fleet.md): two wsgate processes run the same
// configuration behind HAProxy in TCP mode, which hands each new TCP
// connection to the other wsgate in turn. They share nothing at run time;
// what a client needs them to agree on (the server a sticky cookie names,
// the server a hash key goes to) they work out from the configuration
// alone.

// gateNames are the two wsgates' names in HAProxy's configuration.
var gateNames = [2]string{"wsgate-a", "wsgate-b"}

// fleet is two wsgates behind HAProxy.
type fleet struct {
	gates   [2]*proc // wsgate-a and wsgate-b
	ports   [2]int   // their listeners' ports
	haproxy *proc
	port    int    // HAProxy's frontend: the address clients use
	stats   string // HAProxy's stats socket
}

// haproxyConfig is HAProxy in TCP mode in front of the two wsgates, as
// docs/fleet.md shows it, with a plain TCP connect as the health check
// (docs/fleet.md recommends the admin /readyz with option httpchk where
// the admin listener is configured). Its arguments: the stats socket, the
// frontend port, the two wsgates' ports.
const haproxyConfig = `global
	stats socket %s mode 600 level user

defaults
	mode tcp
	timeout connect 1s
	timeout client 1m
	timeout server 1m
	# A connection refused by a dead wsgate is tried once more, on the
	# other one.
	retries 1
	option redispatch 1

frontend wsgate
	bind 127.0.0.1:%d
	default_backend wsgates

backend wsgates
	balance roundrobin
	default-server check inter 200ms fall 2 rise 2
	server wsgate-a 127.0.0.1:%d
	server wsgate-b 127.0.0.1:%d
`

// startFleet runs two wsgates from one configuration text, body (routes,
// upstreams: everything but the listeners), each listening on a port of
// its own (one machine, one address: the port is the one line in which
// their files differ), and HAProxy in front of them. It returns once
// HAProxy accepts and its health checks have passed on both wsgates.
func startFleet(t *testing.T, body string) *fleet {
	t.Helper()
	requirePeers(t)
	f := &fleet{}
	for i := range f.gates {
		f.ports[i] = freePort(t)
		f.gates[i] = startWsgate(t, f.ports[i], fmt.Sprintf("listeners:\n  - address: 127.0.0.1:%d\n%s", f.ports[i], body))
	}
	// A directory of its own, short enough for a unix socket's path
	// (108 bytes).
	dir, err := os.MkdirTemp("", "haproxy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f.stats = filepath.Join(dir, "stats.sock")
	f.port = freePort(t)
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(haproxyConfig, f.stats, f.port, f.ports[0], f.ports[1])), 0o644); err != nil {
		t.Fatal(err)
	}
	// -db: in the foreground, not daemonized, so that killing this
	// process (startProc's cleanup) ends HAProxy.
	f.haproxy = startProc(t, dir, haproxyPath, "-db", "-f", cfg)
	waitPort(t, f.haproxy, f.port, 10*time.Second)
	f.waitStatus(t, "wsgate-a", "UP")
	f.waitStatus(t, "wsgate-b", "UP")
	return f
}

// showStat asks HAProxy's stats socket for `show stat` and returns the
// rows of backend wsgates by server name, each by column name (status:
// UP, DOWN, or a transition such as "UP 1/2"; check_status: L4OK,
// L4CON...).
func (f *fleet) showStat() (map[string]map[string]string, error) {
	c, err := net.DialTimeout("unix", f.stats, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return nil, err
	}
	// HAProxy answers one command and closes the connection.
	out, err := io.ReadAll(c)
	if err != nil {
		return nil, err
	}
	// CSV whose header line starts with "# ".
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(out), "# ")))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, fmt.Errorf("show stat: %q: %v", out, err)
	}
	servers := map[string]map[string]string{}
	for _, row := range rows[1:] {
		m := map[string]string{}
		for i, col := range rows[0] {
			if i < len(row) {
				m[col] = row[i]
			}
		}
		if m["pxname"] == "wsgates" {
			servers[m["svname"]] = m
		}
	}
	return servers, nil
}

// waitStatus waits until HAProxy's health checks have taken server to
// status (UP or DOWN, not a transition), by its stats socket, within 15 s.
func (f *fleet) waitStatus(t *testing.T, server, status string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := f.showStat()
		if err == nil && st[server]["status"] == status {
			return st[server]
		}
		if f.haproxy.Exited() {
			t.Fatalf("haproxy exited: %v\n--- stderr:\n%s", f.haproxy.waitErr, f.haproxy.stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy did not mark %s %s within 15s: last stats %v, error %v", server, status, st[server], err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// accessLine is one line of a wsgate access log: TIME CLIENT METHOD POOL
// URI key=value..., METHOD being "ws" for a tunnel (written when it ends).
type accessLine struct {
	Client, Method, Pool, URI string
	Upstream, Status          string
}

// accessLog parses what wsgate p has written to its access log so far
// (stdout, flushed every 200 ms).
func accessLog(p *proc) []accessLine {
	var lines []accessLine
	for _, s := range strings.Split(p.stdout.String(), "\n") {
		f := strings.Fields(s)
		if len(f) < 5 {
			continue
		}
		l := accessLine{Client: f[1], Method: f[2], Pool: f[3], URI: f[4]}
		for _, kv := range f[5:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "upstream":
				l.Upstream = v
			case "status":
				l.Status = v
			}
		}
		lines = append(lines, l)
	}
	return lines
}

// gateLine is an access log line and the wsgate that wrote it.
type gateLine struct {
	Gate string
	accessLine
}

// access returns the lines of the wsgates' access logs whose URI contains
// match, of the wsgate named gate or, with gate "", of both.
func (f *fleet) access(gate, match string) []gateLine {
	var got []gateLine
	for i, g := range f.gates {
		if gate != "" && gate != gateNames[i] {
			continue
		}
		for _, l := range accessLog(g) {
			if strings.Contains(l.URI, match) {
				got = append(got, gateLine{gateNames[i], l})
			}
		}
	}
	return got
}

// waitAccess waits until f.access(gate, match) has n lines, within 15 s,
// and returns them.
func (f *fleet) waitAccess(t *testing.T, gate, match string, n int) []gateLine {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := f.access(gate, match)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the access logs of %q have %d requests for %q after 15s, want %d: %+v", gate, len(got), match, n, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFleetSocketIOSticky: Socket.IO in Chromium through HAProxy and two
// wsgates whose upstream has sticky_cookie, in front of two Socket.IO
// servers. The page's connections alternate between the wsgates, so its
// requests reach both; whichever wsgate a request comes through, the
// cookie the other one set sends it to the same server, so the Engine.IO
// session, its polling requests and then its WebSocket, lives on one
// server and none is refused with "Session ID unknown".
func TestFleetSocketIOSticky(t *testing.T) {
	t.Parallel()
	requirePeers(t)
	procs, ports := ioServers(t)
	f := startFleet(t, fmt.Sprintf(`routes:
  - upstream: socketio
upstreams:
  socketio:
    balance: round_robin
    sticky_cookie: wsgate_srv
    servers:
      - address: 127.0.0.1:%d
      - address: 127.0.0.1:%d
`, ports[0], ports[1]))
	addrs := map[string]string{"io-1": fmt.Sprintf("127.0.0.1:%d", ports[0]), "io-2": fmt.Sprintf("127.0.0.1:%d", ports[1])}

	// Each wsgate's round robin starts at the first server, so both
	// would send a client's first request to io-1 and agree by chance.
	// One request straight to wsgate-a (not through HAProxy) moves its
	// turn on: now the two pick different servers for a request without
	// the cookie, and only the cookie can keep the page's requests
	// through both wsgates on one server.
	const prime = "/fleet-prime"
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d%s", f.ports[0], prime))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	out := runBrowser(t, "scenarios/fleet_socketio.js", fmt.Sprintf("http://127.0.0.1:%d/", f.port), "wsgate_srv")
	var got struct {
		Hello struct {
			Name      string `json:"name"`
			ID        string `json:"id"`
			Transport string `json:"transport"`
		} `json:"hello"`
		SID       string `json:"sid"`
		Transport string `json:"transport"`
		Sent      []int  `json:"sent"`
		Pongs     []struct {
			N         int    `json:"n"`
			Name      string `json:"name"`
			Transport string `json:"transport"`
		} `json:"pongs"`
		Cookie    string       `json:"cookie"`
		Responses []ioResponse `json:"responses"`
		State     ioPageState  `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("browser result %q: %v", out, err)
	}
	name := got.Hello.Name
	addr, ok := addrs[name]
	if !ok || got.SID == "" || got.Cookie == "" {
		t.Fatalf("hello from %q, Engine.IO sid %q, cookie %q: want io-1 or io-2, a sid and a cookie", name, got.SID, got.Cookie)
	}
	if got.Hello.Transport != "polling" || got.Transport != "websocket" {
		t.Errorf("the page began on %q and is on %q, want polling upgraded to websocket", got.Hello.Transport, got.Transport)
	}
	if len(got.Pongs) != 3 || len(got.Sent) != 3 {
		t.Errorf("sent %v, got pongs %+v; want 3 each", got.Sent, got.Pongs)
	} else {
		for i, p := range got.Pongs {
			if p.N != got.Sent[i] || p.Name != name || p.Transport != "websocket" {
				t.Errorf("pong %d is %+v, want n=%d from %s over websocket", i, p, got.Sent[i], name)
			}
		}
	}
	if got.State.Connects != 1 || len(got.State.Disconnects) != 0 || len(got.State.ConnectErrors) != 0 {
		t.Errorf("page state %+v, want one connect and no disconnect or connect_error", got.State)
	}
	for _, r := range got.Responses {
		if r.Status != 200 {
			t.Errorf("%s %s: status %d, want 200", r.Method, r.URL, r.Status)
		}
	}

	// The browser has closed: the WebSocket's tunnel has ended and its
	// line is in an access log, after the session's polling requests.
	sid := "sid=" + got.SID
	f.waitAccess(t, "", "transport=websocket&"+sid, 1)
	var lines []gateLine
	for _, l := range f.access("", "/") {
		if l.URI != prime {
			lines = append(lines, l)
		}
	}
	perGate := map[string]int{}
	sessionGates := map[string]int{}
	pollGates := map[string]int{}
	conns := map[string]bool{}
	for _, l := range lines {
		perGate[l.Gate]++
		conns[l.Gate+" "+l.Client] = true
		if strings.Contains(l.URI, sid) {
			sessionGates[l.Gate]++
			if l.Method != "ws" {
				pollGates[l.Gate]++
			}
		}
		// Every request of the page, through either wsgate, reached the
		// server of the first answer's cookie.
		if l.Upstream != addr {
			t.Errorf("%s: %s %s went to %s, want %s (%s, the page's server)", l.Gate, l.Method, l.URI, l.Upstream, addr, name)
		}
		want := "200"
		switch {
		case l.Method == "ws":
			want = "101"
		case l.URI == "/favicon.ico":
			want = "204" // the server has no icon
		}
		if l.Status != want {
			t.Errorf("%s: %s %s status %s, want %s", l.Gate, l.Method, l.URI, l.Status, want)
		}
	}
	// The session's requests use at least two TCP connections (the
	// WebSocket always has one of its own; a polling request held while
	// another is sent needs a second one), and HAProxy gives consecutive
	// connections to alternate wsgates. Which pooled connection carries
	// which polling request is Chromium's choice, so the polling requests
	// alone may all go through one wsgate (4 runs in 20); the session as
	// a whole went through both in every run.
	if sessionGates["wsgate-a"] == 0 || sessionGates["wsgate-b"] == 0 {
		t.Errorf("Engine.IO session %s: requests per wsgate %v, want both wsgates to have carried some", got.SID, sessionGates)
	}

	// The servers' side: one saw the whole session (its start on polling,
	// the upgrade, the 3 pings); the other saw no session at all, and
	// neither refused a request.
	var conn, upgraded bool
	pings := 0
	for _, l := range ioLog(t, procs[name]) {
		switch {
		case l.Event == "connection" && l.ID == got.Hello.ID && l.Transport == "polling":
			conn = true
		case l.Event == "upgrade" && l.ID == got.Hello.ID && l.Transport == "websocket":
			upgraded = true
		case l.Event == "ping" && l.ID == got.Hello.ID:
			pings++
		}
	}
	if !conn || !upgraded || pings != 3 {
		t.Errorf("%s log for socket %s: connection on polling %v, upgraded %v, %d pings; want true, true, 3", name, got.Hello.ID, conn, upgraded, pings)
	}
	for n, p := range procs {
		for _, l := range ioLog(t, p) {
			if l.Event == "connection_error" || (n != name && l.Event != "listening") {
				t.Errorf("%s logged %+v; want nothing but listening on the server the page is not on, and no refusal", n, l)
			}
		}
	}
	t.Logf("page on %s (cookie %s), Engine.IO session %s: polling -> websocket, 3 events each way; "+
		"requests per wsgate %v over %d TCP connections, of the session %v (polling %v); all reached %s",
		name, got.Cookie, got.SID, perGate, len(conns), sessionGates, pollGates, addr)
}

// tornadoServers returns the routes and upstreams of a fleet in front of
// the shared Tornado servers tornado-1 and tornado-2, balanced by hash of
// the query parameter Id, and the servers' names by address.
func tornadoServers(t *testing.T) (body string, names map[string]string) {
	t.Helper()
	up1 := startTornado(t, "tornado-1")
	up2 := startTornado(t, "tornado-2")
	body = fmt.Sprintf(`routes:
  - upstream: tornado
upstreams:
  tornado:
    balance: hash
    hash_key: query:Id
    servers:
      - address: 127.0.0.1:%d
      - address: 127.0.0.1:%d
`, up1, up2)
	return body, map[string]string{
		fmt.Sprintf("127.0.0.1:%d", up1): "tornado-1",
		fmt.Sprintf("127.0.0.1:%d", up2): "tornado-2",
	}
}

// dialID opens ws://127.0.0.1:port/websocket?Id=id (the Tornado push
// server behind the fleet) and returns the conn and the name of the
// server in its hello.
func dialID(port int, id string) (*websocket.Conn, string, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial(fmt.Sprintf("ws://127.0.0.1:%d/websocket?Id=%s", port, id), nil)
	if err != nil {
		return nil, "", err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m tornadoMsg
	err = c.ReadJSON(&m)
	c.SetReadDeadline(time.Time{})
	if err == nil && (m.Type != "hello" || m.ID != id) {
		err = fmt.Errorf("first message %+v, want the hello for %s", m, id)
	}
	if err != nil {
		c.Close()
		return nil, "", err
	}
	return c, m.Server, nil
}

// echo sends a text message on c and reads until the Tornado server's
// echo of it (pushes may come first), within 10 s; an error means the
// connection is gone.
func echo(c *websocket.Conn, text string) error {
	deadline := time.Now().Add(10 * time.Second)
	c.SetWriteDeadline(deadline)
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	if err := c.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		return err
	}
	// A push a second: 20 messages outlast the deadline.
	for range 20 {
		var m struct {
			Type, Data string
		}
		if err := c.ReadJSON(&m); err != nil {
			return err
		}
		if m.Type == "echo" && m.Data == text {
			return nil
		}
	}
	return fmt.Errorf("no echo of %q in 20 messages", text)
}

// TestFleetHashByID: two wsgates with `balance: hash` and `hash_key:
// query:Id` in front of two Tornado servers. Each Id connects twice in a
// row, so its two connections go through different wsgates, and both
// reach the same Tornado server: the wsgates agree on every key without
// talking, from the configuration alone.
func TestFleetHashByID(t *testing.T) {
	t.Parallel()
	requirePeers(t)
	body, names := tornadoServers(t)
	f := startFleet(t, body)

	const ids = 16 // all on one server by chance: once in 2^15 runs
	servers := map[string][]string{}
	for i := range ids {
		id := fmt.Sprintf("fleet-hash-%02d", i)
		for range 2 {
			c, server, err := dialID(f.port, id)
			if err != nil {
				t.Fatalf("Id %s: %v", id, err)
			}
			c.Close()
			servers[id] = append(servers[id], server)
		}
	}
	lines := f.waitAccess(t, "", "/websocket?Id=fleet-hash-", 2*ids)

	type seen struct{ gates, upstreams map[string]bool }
	byID := map[string]*seen{}
	perGate := map[string]int{}
	for _, l := range lines {
		id := l.URI[strings.Index(l.URI, "Id=")+3:]
		s := byID[id]
		if s == nil {
			s = &seen{map[string]bool{}, map[string]bool{}}
			byID[id] = s
		}
		s.gates[l.Gate] = true
		s.upstreams[l.Upstream] = true
		perGate[l.Gate]++
		if l.Method != "ws" || l.Status != "101" {
			t.Errorf("%s: %s %s status %s, want a tunnel, 101", l.Gate, l.Method, l.URI, l.Status)
		}
	}
	if perGate["wsgate-a"] == 0 || perGate["wsgate-b"] == 0 {
		t.Errorf("tunnels per wsgate %v: want both to have carried some", perGate)
	}
	perServer := map[string]int{}
	crossed := 0
	for i := range ids {
		id := fmt.Sprintf("fleet-hash-%02d", i)
		s := byID[id]
		if s == nil {
			t.Errorf("Id %s: no access log line", id)
			continue
		}
		if len(s.upstreams) != 1 {
			t.Errorf("Id %s reached %v: want one server", id, s.upstreams)
		}
		for up := range s.upstreams {
			if hello := servers[id]; hello[0] != names[up] || hello[1] != names[up] {
				t.Errorf("Id %s: hellos from %v, access logs say %s (%s)", id, hello, up, names[up])
			}
			perServer[names[up]]++
		}
		// HAProxy's round robin gives consecutive connections to
		// alternate wsgates.
		if len(s.gates) != 2 {
			t.Errorf("Id %s went through %v only: want both wsgates", id, s.gates)
		} else {
			crossed++
		}
	}
	if perServer["tornado-1"] == 0 || perServer["tornado-2"] == 0 {
		t.Errorf("Ids per server %v: want both servers", perServer)
	}
	t.Logf("%d Ids x 2 connections through HAProxy: tunnels per wsgate %v; %d Ids went through both wsgates, each to one server; Ids per server %v",
		ids, perGate, crossed, perServer)
}

// TestFleetInstanceKilled: one of the two wsgates dies by SIGKILL under
// live clients. The clients it carried lose their connection, those of
// the other wsgate keep theirs; the lost ones reconnect through HAProxy to
// the surviving wsgate, which sends each Id to the same Tornado server as
// before. Once HAProxy's health check has marked the dead wsgate DOWN
// (read from its stats socket), 50 handshakes in a row all succeed.
func TestFleetInstanceKilled(t *testing.T) {
	t.Parallel()
	requirePeers(t)
	body, names := tornadoServers(t)
	f := startFleet(t, body)

	const clients = 8
	conns := make([]*websocket.Conn, clients)
	server := map[string]string{}
	idOf := func(i int) string { return fmt.Sprintf("fleet-kill-%02d", i) }
	for i := range conns {
		c, s, err := dialID(f.port, idOf(i))
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		conns[i], server[idOf(i)] = c, s
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	killed := time.Now()
	f.gates[0].Kill(t)

	// Which clients went through the dead wsgate shows now: their
	// connection fails, the others' echo comes back.
	var lost []int
	for i, c := range conns {
		if err := echo(c, "after kill"); err != nil {
			lost = append(lost, i)
		}
	}
	if len(lost) == 0 || len(lost) == clients {
		t.Fatalf("%d of %d clients lost their connection when wsgate-a died: want some, those HAProxy gave it", len(lost), clients)
	}

	// The lost clients reconnect at once, before HAProxy may have
	// noticed anything; HAProxy's redispatch sends a refused connection
	// to the other wsgate. Each Id is back on its server.
	failedReconnects := 0
	for _, i := range lost {
		id := idOf(i)
		var err error
		for try := 0; try < 10; try++ {
			var c *websocket.Conn
			var s string
			c, s, err = dialID(f.port, id)
			if err == nil {
				conns[i].Close()
				conns[i] = c
				if s != server[id] {
					t.Errorf("Id %s reconnected to %s, was on %s", id, s, server[id])
				}
				break
			}
			failedReconnects++
		}
		if err != nil {
			t.Fatalf("Id %s could not reconnect in 10 tries: %v", id, err)
		}
		if err := echo(conns[i], "reconnected"); err != nil {
			t.Errorf("Id %s after reconnecting: %v", id, err)
		}
	}

	st := f.waitStatus(t, "wsgate-a", "DOWN")
	down := time.Since(killed)

	const handshakes = 50
	failed := 0
	for n := range handshakes {
		id := idOf(n % clients)
		c, s, err := dialID(f.port, id)
		if err != nil {
			failed++
			t.Errorf("handshake %d (Id %s) after wsgate-a was marked DOWN: %v", n, id, err)
			continue
		}
		c.Close()
		if s != server[id] {
			t.Errorf("handshake %d: Id %s reached %s, was on %s", n, id, s, server[id])
		}
	}
	// Those handshakes all went through wsgate-b: its access log has
	// their tunnels (ended by the close), each with the Id's server.
	for _, l := range f.waitAccess(t, "wsgate-b", "/websocket?Id=fleet-kill-", handshakes) {
		id := l.URI[strings.Index(l.URI, "Id=")+3:]
		if l.Method != "ws" || l.Status != "101" || names[l.Upstream] != server[id] {
			t.Errorf("wsgate-b: %s %s to %s (%s) status %s, want a tunnel (101) to %s", l.Method, l.URI, l.Upstream, names[l.Upstream], l.Status, server[id])
		}
	}
	t.Logf("SIGKILL of wsgate-a: %d of %d clients lost their connection and reconnected through wsgate-b (%d failed tries); "+
		"HAProxy marked wsgate-a DOWN (check %s %s) %v after the kill; then %d of %d handshakes failed",
		len(lost), clients, failedReconnects, st["check_status"], st["last_chk"], down.Round(time.Millisecond), failed, handshakes)
}
