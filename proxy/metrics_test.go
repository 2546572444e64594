package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/wsgate/wsgate/config"
)

// scrape reads GET /metrics from g's admin listener and parses it with
// Prometheus's own text parser.
func scrape(t testing.TB, g *Gateway) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + g.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return families
}

// value is the value of the series of family name with exactly labels
// (name=value pairs), or -1 when there is no such series. A histogram's
// value is its count of observations.
func value(families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := families[name]
	if f == nil {
		return -1
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range f.Metric {
		if len(m.Label) != len(want) {
			continue
		}
		match := true
		for _, l := range m.Label {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// expected is one series and the value it must reach.
type expected struct {
	name   string
	labels []string
	want   float64
}

// waitMetrics scrapes g until every series has its value (counters are
// published by other goroutines, up to a second after the event), within
// a generous bound.
func waitMetrics(t testing.TB, g *Gateway, exps ...expected) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		families := scrape(t, g)
		var wrong []string
		for _, e := range exps {
			if got := value(families, e.name, e.labels...); got != e.want {
				wrong = append(wrong, fmt.Sprintf("%s%v = %v, want %v", e.name, e.labels, got, e.want))
			}
		}
		if len(wrong) == 0 {
			return families
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics not as expected:\n%s", strings.Join(wrong, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// patientEcho echoes messages and the client's Close, then waits for the
// client to close the connection before closing its own side, so the
// client is the one that ends the tunnel.
func patientEcho(t testing.TB) string {
	up := websocket.Upgrader{}
	return serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				break
			}
			if c.WriteMessage(mt, msg) != nil {
				return
			}
		}
		// The library echoed the Close; wait for the client's EOF.
		c.NetConn().SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c.NetConn())
	}))
}

// closedAddr is a 127.0.0.1 address nothing listens on.
func closedAddr(t testing.TB) string {
	ln := listenLocal(t)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// GET /metrics counts what the test did: handshakes by outcome (101, a
// backend's 403, 426 for a bad version, 404 with no route), messages and
// bytes each way (while the tunnels live, and in all once they end),
// tunnels closed by the client with 1000, plain HTTP requests, failures
// and retries, and a server an active health check took down.
func TestMetrics(t *testing.T) {
	echo := patientEcho(t)
	deny := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusForbidden)
	}))
	sick := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "sick", http.StatusInternalServerError)
	}))
	gone1, gone2 := closedAddr(t), closedAddr(t)
	cfg := &config.Config{
		Listeners: []config.Listener{{Address: "127.0.0.1:0"}},
		Admin:     config.Admin{Address: "127.0.0.1:0"},
		Routes: []config.Route{{Path: "/ws", Upstream: "backend"}, {Path: "/deny", Upstream: "deny"},
			{Path: "/dead", Upstream: "dead"}, {Path: "/gone", Upstream: "gone"}},
		Upstreams: map[string]*config.Upstream{
			"backend": {Servers: []config.Server{{Address: echo, Weight: 1}}},
			"deny":    {Servers: []config.Server{{Address: deny, Weight: 1}}},
			"dead": {Servers: []config.Server{{Address: sick, Weight: 1}},
				HealthCheck: &config.HealthCheck{Path: "/health", Interval: config.Duration(50 * time.Millisecond),
					Timeout: config.Duration(time.Second), Healthy: 1, Unhealthy: 1}},
			"gone": {Servers: []config.Server{{Address: gone1, Weight: 1}, {Address: gone2, Weight: 1}}},
		},
		Timeouts: testTimeouts,
	}
	g := startGateway(t, cfg)
	addr := g.Addrs()[0].String()

	// Before any traffic: the generation, and the reload results at 0.
	waitMetrics(t, g,
		expected{"wsgate_config_generation", nil, 1},
		expected{"wsgate_config_reloads_total", []string{"result", "ok"}, 0},
		expected{"wsgate_config_reloads_total", []string{"result", "error"}, 0},
		expected{"wsgate_log_lines_dropped_total", nil, 0},
	)

	const tunnels, k = 2, 5
	payload := []byte("0123456789") // 10 bytes: a 16-byte frame up (masked), 12 down
	var conns []*websocket.Conn
	for range tunnels {
		c := dial(t, addr, "/ws/chat", nil)
		c.SetCloseHandler(func(int, string) error { return nil }) // the Close is sent by hand below
		for range k {
			if err := c.WriteMessage(websocket.TextMessage, payload); err != nil {
				t.Fatal(err)
			}
		}
		for range k {
			if _, _, err := c.ReadMessage(); err != nil {
				t.Fatal(err)
			}
		}
		conns = append(conns, c)
	}
	route := []string{"route", "/ws"}
	up, down := float64(tunnels*k*16), float64(tunnels*k*12)
	// Live: the counters move while the tunnels are open.
	waitMetrics(t, g,
		expected{"wsgate_websocket_handshakes_total", []string{"route", "/ws", "upstream", "backend", "code", "101"}, tunnels},
		expected{"wsgate_websocket_handshake_duration_seconds", route, tunnels},
		expected{"wsgate_tunnels_active", []string{"route", "/ws", "upstream", "backend", "server", echo}, tunnels},
		expected{"wsgate_tunnel_messages_total", []string{"route", "/ws", "direction", "up"}, tunnels * k},
		expected{"wsgate_tunnel_messages_total", []string{"route", "/ws", "direction", "down"}, tunnels * k},
		expected{"wsgate_tunnel_bytes_total", []string{"route", "/ws", "direction", "up"}, up},
		expected{"wsgate_tunnel_bytes_total", []string{"route", "/ws", "direction", "down"}, down},
	)
	// Each client says goodbye with 1000, reads the echo and closes.
	for _, c := range conns {
		if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			t.Fatalf("after Close: %v, want the echoed Close 1000", err)
		}
		c.Close()
	}

	// Refused handshakes: the backend's 403 (relayed), a bad version
	// (426, route known), no route (404, route and upstream empty).
	for range 2 {
		_, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/deny", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("handshake to /deny: %v, %v; want 403", resp, err)
		}
	}
	base := "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	if got := rawRequest(t, addr, "GET /ws HTTP/1.1\r\n"+base+"Sec-WebSocket-Version: 8\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 426") {
		t.Fatalf("bad version: %q", got)
	}
	if got := rawRequest(t, addr, "GET /nowhere HTTP/1.1\r\n"+base+"Sec-WebSocket-Version: 13\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 404") {
		t.Fatalf("no route: %q", got)
	}
	// Both servers of "gone" refuse the connection: one retry, two failures.
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/gone", nil); err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("handshake to /gone: %v, %v; want 502", resp, err)
	}
	// A plain request.
	resp, err := http.Get("http://" + addr + "/deny/page")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	families := waitMetrics(t, g,
		expected{"wsgate_tunnels_active", []string{"route", "/ws", "upstream", "backend", "server", echo}, 0},
		expected{"wsgate_tunnels_closed_total", []string{"route", "/ws", "closed_by", "client", "close_code", "1000"}, tunnels},
		expected{"wsgate_tunnel_messages_total", []string{"route", "/ws", "direction", "up"}, tunnels * k},
		expected{"wsgate_tunnel_messages_total", []string{"route", "/ws", "direction", "down"}, tunnels * k},
		// The Close frames: 8 bytes up (masked, code 1000), 4 down.
		expected{"wsgate_tunnel_bytes_total", []string{"route", "/ws", "direction", "up"}, up + tunnels*8},
		expected{"wsgate_tunnel_bytes_total", []string{"route", "/ws", "direction", "down"}, down + tunnels*4},
		expected{"wsgate_websocket_handshakes_total", []string{"route", "/deny", "upstream", "deny", "code", "403"}, 2},
		expected{"wsgate_websocket_handshakes_total", []string{"route", "/ws", "upstream", "backend", "code", "426"}, 1},
		expected{"wsgate_websocket_handshakes_total", []string{"route", "", "upstream", "", "code", "404"}, 1},
		expected{"wsgate_websocket_handshakes_total", []string{"route", "/gone", "upstream", "gone", "code", "502"}, 1},
		expected{"wsgate_websocket_handshakes_total", []string{"route", "/ws", "upstream", "backend", "code", "101"}, tunnels},
		expected{"wsgate_http_requests_total", []string{"route", "/deny", "upstream", "deny", "code", "403"}, 1},
		expected{"wsgate_http_request_duration_seconds", []string{"route", "/deny"}, 1},
		expected{"wsgate_upstream_retries_total", []string{"upstream", "gone"}, 1},
		expected{"wsgate_upstream_retries_total", []string{"upstream", "backend"}, 0},
		expected{"wsgate_upstream_failures_total", []string{"upstream", "gone", "server", gone1, "reason", "connect"}, 1},
		expected{"wsgate_upstream_failures_total", []string{"upstream", "gone", "server", gone2, "reason", "connect"}, 1},
		// The active health check took the sick server down; the others are up.
		expected{"wsgate_upstream_server_up", []string{"upstream", "dead", "server", sick}, 0},
		expected{"wsgate_upstream_server_up", []string{"upstream", "backend", "server", echo}, 1},
	)
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		if families[name] == nil {
			t.Errorf("no %s in /metrics", name)
		}
	}

	// A reload without a configuration file fails, and is counted.
	if _, err := g.Reload(); err == nil {
		t.Fatal("reload without a file succeeded")
	}
	waitMetrics(t, g, expected{"wsgate_config_reloads_total", []string{"result", "error"}, 1},
		expected{"wsgate_config_generation", nil, 1})
}

// A tunnel that moves nothing for timeouts.idle is counted closed by idle,
// with no close code, and is no longer active.
func TestMetricsIdleTunnel(t *testing.T) {
	echo := echoUpstream(t, websocket.Upgrader{})
	cfg := configFor(echo)
	cfg.Admin.Address = "127.0.0.1:0"
	cfg.Timeouts.Idle = config.Duration(300 * time.Millisecond)
	g := startGateway(t, cfg)
	c := dial(t, g.Addrs()[0].String(), "/", nil)
	waitMetrics(t, g,
		expected{"wsgate_tunnels_closed_total", []string{"route", "/", "closed_by", "idle", "close_code", "none"}, 1},
		expected{"wsgate_tunnels_active", []string{"route", "/", "upstream", "backend", "server", echo}, 0},
		expected{"wsgate_websocket_handshakes_total", []string{"route", "/", "upstream", "backend", "code", "101"}, 1},
	)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil {
		t.Fatal("the idle tunnel is still open")
	}
}
