package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// ioLine is one JSON line apps/socketio/server.js logs on stdout.
type ioLine struct {
	Server    string `json:"server"`
	Event     string `json:"event"`
	ID        string `json:"id"`
	Transport string `json:"transport"`
	N         int    `json:"n"`
	Code      int    `json:"code"`
	Message   string `json:"message"`
	Method    string `json:"method"`
	URL       string `json:"url"`
}

// ioLog parses what a Socket.IO server has logged so far.
func ioLog(t *testing.T, p *proc) []ioLine {
	t.Helper()
	var lines []ioLine
	for _, s := range strings.Split(strings.TrimSpace(p.stdout.String()), "\n") {
		if s == "" {
			continue
		}
		var l ioLine
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Errorf("%s logged %q: %v", p.name, s, err)
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// ioServers starts two apps/socketio/server.js, io-1 and io-2, and returns
// them by name with their ports.
func ioServers(t *testing.T) (map[string]*proc, []int) {
	t.Helper()
	procs := map[string]*proc{}
	var ports []int
	for _, name := range []string{"io-1", "io-2"} {
		port := freePort(t)
		procs[name] = startNode(t, port, "apps/socketio/server.js", "--port", fmt.Sprint(port), "--name", name)
		ports = append(ports, port)
	}
	return procs, ports
}

// ioGateway runs wsgate with one catch-all route to the two servers,
// round robin, with sticky (the sticky_cookie line) or without it: the
// one difference between the two tests.
func ioGateway(t *testing.T, ports []int, sticky string) int {
	t.Helper()
	gw := freePort(t)
	startWsgate(t, gw, fmt.Sprintf(`
listeners:
  - address: 127.0.0.1:%d
routes:
  - upstream: socketio
upstreams:
  socketio:
    balance: round_robin
%s    servers:
      - address: 127.0.0.1:%d
      - address: 127.0.0.1:%d
`, gw, sticky, ports[0], ports[1]))
	return gw
}

// killServer is an HTTP endpoint for a browser scenario: GET /kill?name=N
// kills the upstream named N with SIGKILL (the process dies as in a crash,
// no goodbye to its clients) and answers once it is dead. It lets the
// scenario, which knows which server its page is on, have the test kill
// that one in the middle of the scenario.
func killServer(t *testing.T, procs map[string]*proc) *httptest.Server {
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		name := r.URL.Query().Get("name")
		p := procs[name]
		if r.URL.Path != "/kill" || p == nil {
			http.Error(w, "no server "+name, http.StatusNotFound)
			return
		}
		// Kill is bounded (5 s) and reports its own failure with Errorf,
		// which is safe from this goroutine.
		p.Kill(t)
		fmt.Fprintf(w, "killed %s\n", name)
	}))
	// Registered after the servers' cleanups, so it runs before them.
	t.Cleanup(srv.Close)
	return srv
}

// TestSocketIOSticky: two Socket.IO servers behind wsgate with the
// upstream's sticky_cookie. The page connects with the default transports
// (long-polling, then the upgrade to WebSocket) and exchanges events both
// ways; the server it is on is killed; Socket.IO reconnects by itself,
// through the gateway, to the other server, upgrades again and exchanges
// events again.
func TestSocketIOSticky(t *testing.T) {
	// Parallel: most of the test is waiting on Chromium and timers.
	t.Parallel()
	requirePeers(t)
	procs, ports := ioServers(t)
	gw := ioGateway(t, ports, "    sticky_cookie: wsgate_srv\n")
	ctl := killServer(t, procs)

	out := runBrowser(t, "scenarios/socketio_sticky.js", fmt.Sprintf("http://127.0.0.1:%d/", gw), ctl.URL, "wsgate_srv")
	type pong struct {
		N         int    `json:"n"`
		Name      string `json:"name"`
		Transport string `json:"transport"`
	}
	type phase struct {
		Hello struct {
			Name      string `json:"name"`
			ID        string `json:"id"`
			Transport string `json:"transport"`
		} `json:"hello"`
		Transport string `json:"transport"`
		Sent      []int  `json:"sent"`
		Pongs     []pong `json:"pongs"`
		Cookie    string `json:"cookie"`
	}
	var got struct {
		First, Second phase
		ReconnectMs   int          `json:"reconnectMs"`
		Responses     []ioResponse `json:"responses"`
		State         ioPageState  `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("browser result %q: %v", out, err)
	}

	for i, ph := range []phase{got.First, got.Second} {
		// The hello is sent on connect, before the upgrade: it names the
		// transport the connection began on.
		if ph.Hello.Transport != "polling" || ph.Transport != "websocket" {
			t.Errorf("connection %d: began on %q and is on %q, want polling upgraded to websocket", i+1, ph.Hello.Transport, ph.Transport)
		}
		if len(ph.Pongs) != 3 || len(ph.Sent) != 3 {
			t.Errorf("connection %d: sent %v, got pongs %+v; want 3 each", i+1, ph.Sent, ph.Pongs)
			continue
		}
		for j, p := range ph.Pongs {
			if p.N != ph.Sent[j] || p.Name != ph.Hello.Name || p.Transport != "websocket" {
				t.Errorf("connection %d: pong %d is %+v, want n=%d from %s over websocket", i+1, j, p, ph.Sent[j], ph.Hello.Name)
			}
		}
		if ph.Cookie == "" {
			t.Errorf("connection %d: the browser has no wsgate_srv cookie", i+1)
		}
	}
	dead, alive := got.First.Hello.Name, got.Second.Hello.Name
	if procs[dead] == nil || procs[alive] == nil || dead == alive {
		t.Fatalf("first connection on %q, second on %q: want io-1 and io-2, one each", dead, alive)
	}
	if !procs[dead].Exited() {
		t.Errorf("%s, the server the page was on, is still running", dead)
	}
	// The gateway re-pinned the client: the cookie named the dead server
	// and now names the live one.
	if got.First.Cookie == got.Second.Cookie {
		t.Errorf("sticky cookie %q did not change when %s died", got.First.Cookie, dead)
	}
	// Two Engine.IO sessions, each polling first and then upgraded.
	if want := []string{"polling", "websocket", "polling", "websocket"}; fmt.Sprint(got.State.Transports) != fmt.Sprint(want) {
		t.Errorf("transports seen by the page %v, want %v", got.State.Transports, want)
	}
	if got.State.Connects != 2 || len(got.State.Disconnects) != 1 {
		t.Errorf("page saw %d connects and disconnects %q, want 2 and one", got.State.Connects, got.State.Disconnects)
	}
	// With stickiness no polling request ever reached the wrong server:
	// no 400 "Session ID unknown", and every answer was a 200, the
	// reconnect right after the kill included: the gateway's keep-alive
	// connections to the dead server all fail, and the GET then goes to the
	// live server instead of answering 502.
	polls := 0
	for _, r := range got.Responses {
		polls++
		if r.Status != 200 {
			t.Errorf("%s %s: status %d, want 200", r.Method, r.URL, r.Status)
		}
	}
	// The servers' side: each saw its session begin on polling, upgrade,
	// and the page's 3 pings, and neither refused a request.
	for name, want := range map[string]string{dead: got.First.Hello.ID, alive: got.Second.Hello.ID} {
		var conn, upgraded bool
		pings := 0
		for _, l := range ioLog(t, procs[name]) {
			switch {
			case l.Event == "connection" && l.ID == want && l.Transport == "polling":
				conn = true
			case l.Event == "upgrade" && l.ID == want && l.Transport == "websocket":
				upgraded = true
			case l.Event == "ping" && l.ID == want:
				pings++
			case l.Event == "connection_error":
				t.Errorf("%s refused a request: %+v", name, l)
			}
		}
		if !conn || !upgraded || pings != 3 {
			t.Errorf("%s log for socket %s: connection on polling %v, upgraded %v, %d pings; want true, true, 3", name, want, conn, upgraded, pings)
		}
	}
	t.Logf("page on %s (cookie %s): polling -> websocket, 3 events each way; %s killed; "+
		"reconnected to %s (cookie %s) in %d ms, polling -> websocket, 3 events each way; "+
		"%d polling responses, all 200; disconnect reason %q, connect_error %q",
		dead, got.First.Cookie, dead, alive, got.Second.Cookie, got.ReconnectMs, polls, got.State.Disconnects, got.State.ConnectErrors)
}

// ioResponse is one polling request the page made, as the scenario
// recorded it (body only where the scenario keeps it).
type ioResponse struct {
	Method string `json:"method"`
	Status int    `json:"status"`
	URL    string `json:"url"`
	Body   string `json:"body"`
}

// ioPageState is what the page's Socket.IO client went through.
type ioPageState struct {
	Transports    []string `json:"transports"`
	Connects      int      `json:"connects"`
	Disconnects   []string `json:"disconnects"`
	ConnectErrors []string `json:"connectErrors"`
}

// TestSocketIOWithoutSticky is the same setup without sticky_cookie, to
// show what the advice in docs/backends.md prevents: Socket.IO's polling requests are
// spread over both servers, and the server that did not make the session
// answers 400 "Session ID unknown" (Engine.IO error code 1), as Socket.IO's
// "Using multiple nodes" documentation describes.
func TestSocketIOWithoutSticky(t *testing.T) {
	t.Parallel()
	requirePeers(t)
	procs, ports := ioServers(t)
	gw := ioGateway(t, ports, "")

	out := runBrowser(t, "scenarios/socketio_nosticky.js", fmt.Sprintf("http://127.0.0.1:%d/", gw))
	var got struct {
		ElapsedMs int          `json:"elapsedMs"`
		Responses []ioResponse `json:"responses"`
		State     ioPageState  `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("browser result %q: %v", out, err)
	}
	// The browser's side: polling requests answered 400 with Engine.IO's
	// error code 1.
	unknown, ok := 0, 0
	for _, r := range got.Responses {
		switch {
		case r.Status == 400 && strings.Contains(r.Body, `"code":1`) && strings.Contains(r.Body, "Session ID unknown"):
			unknown++
		case r.Status == 200:
			ok++
		}
	}
	if unknown < 2 {
		t.Errorf("the page got %d 400 \"Session ID unknown\" answers in %d ms, want at least 2: %+v", unknown, got.ElapsedMs, got.Responses)
	}
	// The servers' side: Engine.IO's connection_error event, code 1.
	refused := map[string]int{}
	for name, p := range procs {
		for _, l := range ioLog(t, p) {
			if l.Event == "connection_error" && l.Code == 1 && l.Message == "Session ID unknown" {
				refused[name]++
			}
		}
	}
	if refused["io-1"]+refused["io-2"] == 0 {
		t.Errorf("neither server logged Engine.IO error 1 \"Session ID unknown\"")
	}
	// Each failure drops the connection, and Socket.IO starts over: the
	// client's own view of the same problem.
	if len(got.State.ConnectErrors)+len(got.State.Disconnects) == 0 {
		t.Errorf("the page saw no connect_error or disconnect; state %+v", got.State)
	}
	t.Logf("without sticky_cookie, in %d ms: %d polling answers 200, %d answers 400 \"Session ID unknown\" in the browser; "+
		"servers logged code 1 %v; page: connect_error %q, disconnects %q, transports %v",
		got.ElapsedMs, ok, unknown, refused, got.State.ConnectErrors, got.State.Disconnects, got.State.Transports)
}
