package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/config"
)

// testTimeouts are short so failure paths finish fast; idle stays long
// enough never to fire by accident.
var testTimeouts = config.Timeouts{
	Connect:   config.Duration(2 * time.Second),
	Handshake: config.Duration(2 * time.Second),
	Idle:      config.Duration(time.Minute),
	Drain:     config.Duration(5 * time.Second),
}

// gatewayFor starts a gateway on 127.0.0.1 with one catch-all route to the
// given upstream servers and returns its address. It is shut down when the
// test ends.
func gatewayFor(t testing.TB, servers ...string) string {
	t.Helper()
	return startGateway(t, configFor(servers...)).Addrs()[0].String()
}

func startGateway(t testing.TB, cfg *config.Config) *Gateway {
	t.Helper()
	return startGatewayLogging(t, cfg, io.Discard)
}

// startGatewayLogging starts a gateway whose access log goes to accessLog.
func startGatewayLogging(t testing.TB, cfg *config.Config, accessLog io.Writer) *Gateway {
	t.Helper()
	return startGatewayOpts(t, cfg, Options{AccessLog: accessLog, ErrorLog: testLog{t}})
}

// startGatewayOpts starts a gateway with opts and shuts it down when the
// test ends.
func startGatewayOpts(t testing.TB, cfg *config.Config, opts Options) *Gateway {
	t.Helper()
	if cfg.Limits.MaxHeaderBytes == 0 {
		cfg.Limits.MaxHeaderBytes = 16384
	}
	g, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	return g
}

// testLog sends the gateway's error log to the test's log.
type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// serveHTTP runs handler on a fresh 127.0.0.1 port until the test ends.
func serveHTTP(t testing.TB, handler http.Handler) string {
	t.Helper()
	return serveOn(t, listenLocal(t), handler)
}

// listenLocal listens on a fresh 127.0.0.1 port until the test ends.
func listenLocal(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveOn runs handler on ln until the test ends and returns its address.
func serveOn(t testing.TB, ln net.Listener, handler http.Handler) string {
	t.Helper()
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// echoUpstream is a WebSocket server that echoes every message with its
// type; it answers pings with pongs (the library default) and echoes the
// close code and reason it receives.
func echoUpstream(t testing.TB, up websocket.Upgrader) string {
	return serveHTTP(t, echoHandler(up))
}

// echoHandler is echoUpstream's handler, for servers on other listeners.
func echoHandler(up websocket.Upgrader) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadLimit(64 << 20)
		// Echo the close code and reason; the library's default answer
		// keeps only the code.
		c.SetCloseHandler(func(code int, text string) error {
			return c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
		})
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				return
			}
		}
	})
}

// dial opens a WebSocket through the gateway at addr.
func dial(t testing.TB, addr, path string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+path, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s%s: %v (status %d)", addr, path, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawReadLimit bounds rawRequest's read: a backstop for a server that
// never closes, far beyond what a loaded machine takes to answer.
const rawReadLimit = 10 * time.Second

// rawRequest sends raw bytes to addr and returns everything read until the
// server closes or rawReadLimit passes.
func rawRequest(t testing.TB, addr, request string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	c.SetReadDeadline(time.Now().Add(rawReadLimit))
	io.Copy(&out, c)
	return out.String()
}

// configFor is a config with one catch-all route to servers.
func configFor(servers ...string) *config.Config {
	cfg := &config.Config{
		Listeners: []config.Listener{{Address: "127.0.0.1:0"}},
		Routes:    []config.Route{{Path: "/", Upstream: "backend"}},
		Upstreams: map[string]*config.Upstream{"backend": {}},
		Timeouts:  testTimeouts,
	}
	for _, s := range servers {
		cfg.Upstreams["backend"].Servers = append(cfg.Upstreams["backend"].Servers, config.Server{Address: s, Weight: 1})
	}
	return cfg
}

// waitListenerClosed waits until the gateway at addr accepts no more
// connections (its listener closed by a drain).
func waitListenerClosed(t testing.TB, addr string) {
	t.Helper()
	waitFor(t, "listener closed", func() bool {
		probe, err := net.Dial("tcp", addr)
		if err == nil {
			probe.Close() // accepted before the listener closed
		}
		return err != nil
	})
}

// dialRaw opens a TCP connection to the gateway at addr for a test that
// speaks HTTP by hand; it is closed when the test ends, and every read
// and write must be done within d.
func dialRaw(t testing.TB, addr string, d time.Duration) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(d))
	return c
}
