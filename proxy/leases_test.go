package proxy

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// Every kind of exchange gives its server's lease back once it is over:
// an answered request, a streamed one, a request whose body the client
// cut, a refused handshake, a tunnel, and a failed try. A lease kept would
// count against max_conns and least_conn for ever.
func TestLeasesReturnAfterEveryExchange(t *testing.T) {
	echo := echoHandler(websocket.Upgrader{})
	backend := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/refuse":
			http.Error(w, "no", http.StatusForbidden)
		case "/ws":
			echo.ServeHTTP(w, r)
		case "/stream":
			w.(http.Flusher).Flush()
			io.WriteString(w, "streamed")
		default:
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "ok")
		}
	}))
	g := startGateway(t, configFor(backend))
	addr := g.Addrs()[0].String()
	srv := g.gen.Load().router.Match("x", "/").Pool.Servers()[0]
	released := func(what string) {
		t.Helper()
		waitFor(t, what+": the lease given back", func() bool { return srv.Active() == 0 })
	}

	if status, body := get(addr, "/answer"); status != 200 || body != "ok" {
		t.Fatalf("GET: %d %q", status, body)
	}
	released("an answered request")
	if status, body := get(addr, "/stream"); status != 200 || body != "streamed" {
		t.Fatalf("GET /stream: %d %q", status, body)
	}
	released("a streamed answer")

	c := dialRaw(t, addr, 10*time.Second)
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
	c.(interface{ CloseWrite() error }).CloseWrite()
	io.ReadAll(c)
	released("a body the client cut")

	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/refuse", nil); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("handshake on /refuse: %v, want the backend's 403", err)
	}
	released("a refused handshake")

	ws := dial(t, addr, "/ws", nil)
	if srv.Active() != 1 {
		t.Fatalf("a live tunnel holds %d leases, want 1", srv.Active())
	}
	ws.Close()
	released("a tunnel")

	dead := startGateway(t, configFor("127.0.0.1:1"))
	deadSrv := dead.gen.Load().router.Match("x", "/").Pool.Servers()[0]
	if status, _ := get(dead.Addrs()[0].String(), "/"); status != 502 {
		t.Fatalf("GET through a dead server: %d, want 502", status)
	}
	waitFor(t, "a failed try: the lease given back", func() bool { return deadSrv.Active() == 0 })
}
