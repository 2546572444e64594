package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/syncbuf"
)

// parseJSONLines decodes every line of log, failing the test on one that
// is not a JSON object.
func parseJSONLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(log, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON (%v): %q", err, l)
		}
		lines = append(lines, m)
	}
	return lines
}

// checkFields compares the fields of a JSON log line with want (numbers
// as encoding/json decodes them, float64), and checks that "time" is RFC
// 3339 and duration_ms a number.
func checkFields(t *testing.T, line map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got, ok := line[k]; !ok || got != v {
			t.Errorf("%s = %#v (present %v), want %#v in %v", k, got, ok, v, line)
		}
	}
	if ts, _ := line["time"].(string); ts == "" {
		t.Errorf("no time in %v", line)
	} else if _, err := time.Parse(time.RFC3339, ts); err != nil {
		t.Errorf("time: %v", err)
	}
	if _, ok := line["duration_ms"].(float64); !ok {
		t.Errorf("duration_ms = %#v, want a number", line["duration_ms"])
	}
}

// With access_log.format json, every line is a JSON object: a tunnel's
// line carries its counts and who closed it, a request's line its method,
// path, status and size, both the route, upstream and server; bytes that
// are not text in a request URI are escaped.
func TestAccessLogJSON(t *testing.T) {
	up := echoOrName(t, "plain")
	var log syncbuf.Buffer
	cfg := configFor(up)
	cfg.AccessLog.Format = config.LogJSON
	g := startGatewayLogging(t, cfg, &log)
	addr := g.Addrs()[0].String()

	c := dial(t, addr, "/ws-json?id=1", nil)
	if err := c.WriteMessage(websocket.TextMessage, []byte("12345")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "12345" {
		t.Fatalf("echo: %q, %v", msg, err)
	}
	// The client ends the tunnel with Close 4001; the echo server answers
	// it with the same code.
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, ""), time.Now().Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 4001) {
		t.Fatalf("after the Close: %v, want the echoed close 4001", err)
	}
	c.Close()
	if status, body := get(addr, "/plain?x=1"); status != 200 || body != "plain" {
		t.Fatalf("GET: %d %q", status, body)
	}
	rawRequest(t, addr, "GET /odd\"\\\xff\x01 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	waitFor(t, "three log lines", func() bool { return strings.Count(log.String(), "\n") == 3 })

	byKind := map[string][]map[string]any{}
	for _, l := range parseJSONLines(t, log.String()) {
		kind, _ := l["kind"].(string)
		byKind[kind] = append(byKind[kind], l)
	}
	if len(byKind["tunnel"]) != 1 || len(byKind["http"]) != 2 {
		t.Fatalf("lines by kind: %v", byKind)
	}
	tunnel := byKind["tunnel"][0]
	// One 5-byte message each way, 11 bytes up (2 header + 4 mask + 5)
	// and 7 down (unmasked), then the Close frames: 8 bytes up (2 + 4 +
	// the code) and 4 down.
	checkFields(t, tunnel, map[string]any{
		"host": addr, "path": "/ws-json?id=1", "route": "/", "upstream": "backend", "server": up,
		"status": 101.0, "bytes_up": 19.0, "bytes_down": 11.0, "messages_up": 1.0, "messages_down": 1.0,
		"close_code": 4001.0, "closed_by": "client",
	})
	if client, _ := tunnel["client"].(string); !strings.HasPrefix(client, "127.0.0.1:") {
		t.Errorf("client = %q", client)
	}
	var plain map[string]any
	for _, l := range byKind["http"] {
		if l["path"] == "/plain?x=1" {
			plain = l
		}
	}
	if plain == nil {
		t.Fatalf("no line for /plain?x=1 in %v", byKind["http"])
	}
	checkFields(t, plain, map[string]any{
		"method": "GET", "host": addr, "route": "/", "upstream": "backend", "server": up,
		"status": 200.0, "bytes": 5.0,
	})
}

// The error log is "wsgate: DATE TIME msg" in text, as log.Logger wrote
// it, and an object with time, level and msg in JSON.
func TestErrorLogFormats(t *testing.T) {
	dead := freeAddr(t) // nothing listens: the dial fails and is logged
	for _, tc := range []struct {
		format string
		check  func(t *testing.T, line string)
	}{
		{config.LogText, func(t *testing.T, line string) {
			re := regexp.MustCompile(`^wsgate: \d{4}/\d\d/\d\d \d\d:\d\d:\d\d upstream backend server ` + regexp.QuoteMeta(dead) + `: `)
			if !re.MatchString(line) {
				t.Errorf("text line %q does not match %s", line, re)
			}
		}},
		{config.LogJSON, func(t *testing.T, line string) {
			m := parseJSONLines(t, line)[0]
			if msg, _ := m["msg"].(string); m["level"] != "ERROR" || !strings.HasPrefix(msg, "upstream backend server "+dead+": ") {
				t.Errorf("JSON line %v: want level ERROR and msg about the server", m)
			}
			if ts, _ := m["time"].(string); ts == "" {
				t.Errorf("no time in %v", m)
			}
		}},
	} {
		t.Run(tc.format, func(t *testing.T) {
			var errLog syncbuf.Buffer
			cfg := configFor(dead)
			cfg.ErrorLog.Format = tc.format
			g := startGatewayOpts(t, cfg, Options{AccessLog: io.Discard, ErrorLog: &errLog})
			if status, _ := get(g.Addrs()[0].String(), "/"); status != 502 {
				t.Fatalf("GET to a dead server: %d, want 502", status)
			}
			waitFor(t, "the error line", func() bool { return strings.Contains(errLog.String(), "upstream backend server") })
			tc.check(t, lineWith(errLog.String(), "upstream backend server"))
		})
	}
}

// A log whose destination takes nothing (a pipe nobody reads) does not
// hold requests up: its lines are dropped once its queue is full, and
// counted.
func TestFullLogQueueDropsLines(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	up := echoOrName(t, "x")
	cfg := configFor(up)
	cfg.Limits.MaxHeaderBytes = 16384
	g, err := New(cfg, Options{AccessLog: w, ErrorLog: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	g.accessLog.max = 8 << 10
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g.Shutdown(ctx)
		w.Close()
	})
	// Cleanups run last first: the reader closes before the Shutdown, so
	// the writer's write fails instead of waiting.
	t.Cleanup(func() { r.Close() })

	// 300 lines of over 1 KiB: beyond the pipe's 64 KiB and the queue.
	addr := g.Addrs()[0].String()
	pad := strings.Repeat("p", 1024)
	for i := range 300 {
		if status, body := get(addr, fmt.Sprintf("/%s?i=%d", pad, i)); status != 200 {
			t.Fatalf("request %d: %d %.100q", i, status, body)
		}
	}
	if n := g.LogLinesDropped(); n == 0 {
		t.Fatal("no line dropped")
	} else {
		t.Logf("%d of 300 lines dropped", n)
	}
}

// A reload that changes access_log writes the next lines to the new file
// in the new format.
func TestReloadSwitchesAccessLog(t *testing.T) {
	dir := t.TempDir()
	up := echoOrName(t, "x")
	gw := freeAddr(t)
	first, second := filepath.Join(dir, "first.log"), filepath.Join(dir, "second.log")
	conf := func(path, format string) string {
		return fmt.Sprintf("listeners: [{address: %q}]\nroutes: [{upstream: app}]\nupstreams: {app: {servers: [{address: %q}]}}\n"+
			"access_log: {path: %s, format: %s}\n", gw, up, path, format)
	}
	path := filepath.Join(dir, "wsgate.yaml")
	writeFile(t, path, conf(first, "json"))
	g := startFromFile(t, path, nil)
	read := func(name string) string {
		b, _ := os.ReadFile(name)
		return string(b)
	}
	if status, _ := get(gw, "/before"); status != 200 {
		t.Fatalf("GET /before: %d", status)
	}
	waitFor(t, "the line in the first file", func() bool { return strings.Contains(read(first), `"path":"/before"`) })

	writeFile(t, path, conf(second, "text"))
	if _, err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if status, _ := get(gw, "/after"); status != 200 {
		t.Fatalf("GET /after: %d", status)
	}
	waitFor(t, "the line in the second file", func() bool { return strings.Contains(read(second), " GET app /after upstream=") })
	if strings.Contains(read(first), "/after") {
		t.Errorf("the first file got a line after the reload:\n%s", read(first))
	}
}
