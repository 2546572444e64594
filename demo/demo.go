// Package demo provides the backends behind `wsgate -demo`: small HTTP servers
// that serve a browser page and a WebSocket endpoint which greets, echoes and
// pushes the time once per second, each message tagged with the upstream name
// so the page shows which backend the gateway routed it to.
package demo

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

//go:embed index.html
var indexHTML []byte

const (
	maxMessageSize = 1 << 20 // largest message a client may send
	pushInterval   = time.Second
	// writeTimeout bounds every write, so one stalled client cannot hold up
	// the broadcast to the others for long.
	writeTimeout    = 5 * time.Second
	shutdownTimeout = 5 * time.Second
)

// Upstream is one running demo backend.
type Upstream struct {
	// Name identifies the backend in every message it sends, e.g. "upstream-1".
	Name string
	// Addr is the address it listens on, 127.0.0.1:port.
	Addr string

	srv      *fasthttp.Server
	ln       net.Listener
	upgrader websocket.FastHTTPUpgrader
	done     chan struct{} // closed by Close to stop the ticker
	wg       sync.WaitGroup
	// mu guards clients and closed; closed stops new clients registering
	// (and thus wg.Add) once Close has begun waiting.
	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool

	closeOnce sync.Once
	closeErr  error
}

// client is one WebSocket connection. Both the ticker and the connection's
// own read loop write to it, and the websocket package allows only one
// concurrent writer, hence the mutex.
type client struct {
	conn *websocket.Conn
	mu   sync.Mutex
}

func (c *client) write(messageType int, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeLocked(messageType, data)
}

func (c *client) writeLocked(messageType int, data []byte) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	return c.conn.WriteMessage(messageType, data)
}

// Start starts n demo upstreams named "upstream-1".."upstream-n", each on its
// own OS-chosen port on 127.0.0.1. If any fails to start, those already
// started are closed.
func Start(n int) ([]*Upstream, error) {
	if n < 1 {
		return nil, fmt.Errorf("demo: need at least one upstream, got %d", n)
	}
	ups := make([]*Upstream, 0, n)
	for i := 1; i <= n; i++ {
		u, err := start(fmt.Sprintf("upstream-%d", i))
		if err != nil {
			for _, started := range ups {
				started.Close()
			}
			return nil, err
		}
		ups = append(ups, u)
	}
	return ups, nil
}

func start(name string) (*Upstream, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: %s: %w", name, err)
	}
	u := &Upstream{
		Name:    name,
		Addr:    ln.Addr().String(),
		ln:      ln,
		done:    make(chan struct{}),
		clients: make(map[*client]struct{}),
		upgrader: websocket.FastHTTPUpgrader{
			// Behind the gateway the Host header may name the upstream while
			// Origin names the gateway, so the default same-origin check would
			// reject the page. The demo holds nothing worth protecting.
			CheckOrigin: func(*fasthttp.RequestCtx) bool { return true },
		},
	}
	u.srv = &fasthttp.Server{
		Handler: u.handle,
		Name:    "wsgate-demo",
		// Shutdown only closes idle keep-alive connections, so make them go
		// idle and close promptly.
		ReadTimeout:     10 * time.Second,
		IdleTimeout:     10 * time.Second,
		CloseOnShutdown: true,
		// Otherwise closing a hijacked WebSocket connection is a no-op until
		// its handler returns, and Close could not end a blocked read.
		KeepHijackedConns: true,
		// fasthttp's worker-pool janitor notices Shutdown only between naps
		// of this length (default 10 s); keep the goroutine's afterlife short.
		MaxIdleWorkerDuration: time.Second,
	}
	u.wg.Add(2)
	go func() {
		defer u.wg.Done()
		// An error here can only come from accepting; clients then see a
		// dead port, which is all the demo needs to report.
		_ = u.srv.Serve(ln)
	}()
	go func() {
		defer u.wg.Done()
		u.pushTime()
	}()
	return u, nil
}

// Close stops the server and the ticker, so the port refuses connections,
// and closes every WebSocket client with 1001 (going away), waiting for all
// of their goroutines to finish. It is safe to call more than once.
func (u *Upstream) Close() error {
	u.closeOnce.Do(func() {
		close(u.done)
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		u.closeErr = u.srv.ShutdownWithContext(ctx)
		// Shutdown does nothing if Serve has not got as far as taking the
		// listener yet; closing it ourselves makes Serve return either way.
		u.ln.Close()

		// Hijacked WebSocket connections are no longer the server's, so
		// Shutdown neither waits for nor closes them.
		u.mu.Lock()
		u.closed = true
		clients := u.snapshotLocked()
		u.mu.Unlock()
		goingAway := websocket.FormatCloseMessage(websocket.CloseGoingAway, "upstream shutting down")
		for _, c := range clients {
			// WriteControl may run concurrently with other writes.
			_ = c.conn.WriteControl(websocket.CloseMessage, goingAway, time.Now().Add(time.Second))
			c.conn.Close() // ends the client's read loop
		}
		u.wg.Wait()
	})
	return u.closeErr
}

func (u *Upstream) handle(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() {
		ctx.NotFound()
		return
	}
	switch string(ctx.Path()) {
	case "/":
		ctx.SetContentType("text/html; charset=utf-8")
		ctx.SetBody(indexHTML)
	case "/healthz":
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("ok")
	case "/websocket":
		// Copy: ctx is recycled before the hijacked handler runs.
		id := string(ctx.QueryArgs().Peek("Id"))
		// On failure Upgrade has already written the error response.
		_ = u.upgrader.Upgrade(ctx, func(conn *websocket.Conn) { u.serveWS(conn, id) })
	default:
		ctx.NotFound()
	}
}

// serveWS runs for the lifetime of one WebSocket connection: it greets the
// client, then echoes what it reads until the connection fails or closes.
func (u *Upstream) serveWS(conn *websocket.Conn, id string) {
	defer conn.Close()
	conn.SetReadLimit(maxMessageSize)

	c := &client{conn: conn}
	// Hold back the ticker's writes until the hello is out, so it comes first.
	c.mu.Lock()
	if !u.register(c) {
		c.mu.Unlock()
		return
	}
	defer u.unregister(c)
	err := c.writeLocked(websocket.TextMessage, u.event("hello", "id", id))
	c.mu.Unlock()
	if err != nil {
		return
	}
	for {
		messageType, data, err := conn.ReadMessage()
		if err != nil {
			return // includes the client's close frame, which the library answers
		}
		if messageType == websocket.TextMessage {
			data = u.event("echo", "data", string(data))
		}
		if err := c.write(messageType, data); err != nil {
			return
		}
	}
}

// register adds c to the broadcast set and counts its goroutine in wg. It
// reports false once Close has started, as wg may then already be waited on.
func (u *Upstream) register(c *client) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	u.clients[c] = struct{}{}
	u.wg.Add(1)
	return true
}

func (u *Upstream) unregister(c *client) {
	u.mu.Lock()
	delete(u.clients, c)
	u.mu.Unlock()
	u.wg.Done()
}

func (u *Upstream) snapshotLocked() []*client {
	clients := make([]*client, 0, len(u.clients))
	for c := range u.clients {
		clients = append(clients, c)
	}
	return clients
}

// pushTime broadcasts the current time to every client once per interval
// until Close. One ticker serves all clients of the upstream.
func (u *Upstream) pushTime() {
	ticker := time.NewTicker(pushInterval)
	defer ticker.Stop()
	for {
		select {
		case <-u.done:
			return
		case now := <-ticker.C:
			msg := u.event("time", "time", now.Format(time.RFC3339))
			u.mu.Lock()
			clients := u.snapshotLocked()
			u.mu.Unlock()
			for _, c := range clients {
				if err := c.write(websocket.TextMessage, msg); err != nil {
					// A failed write leaves the connection unusable; closing
					// it makes its read loop exit and unregister.
					c.conn.Close()
				}
			}
		}
	}
}

// event encodes a message of the given type from this upstream carrying one
// extra field.
func (u *Upstream) event(typ, key, value string) []byte {
	msg, err := json.Marshal(map[string]string{"type": typ, "upstream": u.Name, key: value})
	if err != nil {
		panic(err) // cannot happen: a map of strings always encodes
	}
	return msg
}
