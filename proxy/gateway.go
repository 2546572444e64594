// Package proxy is wsgate's data plane: listeners, routing, WebSocket
// handshake forwarding, the tunnel that carries upgraded connections, and
// the streaming plain HTTP reverse proxy.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/admin"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/shrinkset"
	"github.com/wsgate/wsgate/relay"
	"github.com/wsgate/wsgate/tlsterm"
)

// clientKeepAlive is how long an idle keep-alive client connection is kept
// between requests; nginx's keepalive_timeout default.
const clientKeepAlive = 75 * time.Second

// Options are the parts of a Gateway that do not come from the config file.
type Options struct {
	// AccessLog, when set, receives the access log (one line per request
	// or tunnel) in place of the configured access_log.path; the format
	// is still access_log.format. Tests set it.
	AccessLog io.Writer
	// ErrorLog, when set, receives the error log in place of the
	// configured error_log.path, in error_log.format.
	ErrorLog io.Writer
	// Stdout and Stderr are what the log paths "stdout" and "stderr"
	// write to; nil means the process's.
	Stdout, Stderr io.Writer
	// CertPollInterval is how often TLS certificate files are checked for
	// changes; 0 means 2s.
	CertPollInterval time.Duration
	// ConfigPath is the file Reload reads; "" when the configuration was
	// built in Go (-demo), which leaves nothing to reload.
	ConfigPath string
}

// defaultCertPoll: a renewed certificate is in use within seconds, for
// the cost of reading a few KiB.
const defaultCertPoll = 2 * time.Second

type timeouts struct {
	connect, handshake, idle, drain time.Duration
}

// Gateway is a running wsgate: the process layer that lives as long as the
// process (listening sockets and their servers, the relay, the registry of
// live tunnels and the drain, the logs) in front of the generation in
// service, which a reload replaces (see generation and Reload).
//
// Ownership of a client connection: the listener's accept loop owns it
// until a fasthttp server takes it (serverView.Accept); fasthttp owns it
// while it serves requests; a tunnel owns it from unwrapHijacked on, and
// the relay closes it when the tunnel ends.
type Gateway struct {
	// gen is the generation in service: loaded once per request.
	gen        atomic.Pointer[generation]
	starting   *generation // built by New, published by Start
	configPath string
	certPoll   time.Duration

	// lmu guards the listeners: bound (by configured address) and the
	// servers in front of them, changed by Start, Reload and Shutdown.
	lmu   sync.Mutex
	bound map[string]*boundListener
	// admin serves the admin endpoints on adminAddress (as configured);
	// nil when admin.address is not set. lmu.
	admin        *admin.Server
	adminAddress string
	// serving counts the fasthttp Serve loops and the shutdowns of servers
	// a reload replaced; a drain waits for both. retired is cancelled at
	// the end of a drain: replaced servers stop waiting for their last
	// requests then.
	serving       sync.WaitGroup
	retired       context.Context
	cancelRetired context.CancelFunc

	// reloadMu serializes reloads, and a reload with the drain.
	reloadMu sync.Mutex
	reloads  int64 // reloads attempted; reloadMu
	// draining is set once Shutdown began: a reload is refused.
	draining atomic.Bool
	// leaving are the timers that end the tunnels of servers and routes a
	// reload took out, at timeouts.drain after it.
	leavingMu sync.Mutex
	leaving   map[*time.Timer]struct{}

	mu      sync.Mutex
	tunnels *shrinkset.Set[liveTunnel]
	relay   *relay.Relay // event loops for plain TCP tunnels
	spare   *spareFD     // a descriptor given back for hand-overs at the limit
	// pending counts 101s relayed whose hijack handler has not registered
	// the tunnel yet; fasthttp runs it on a goroutine of its own after the
	// request handler returns, so a drain must wait for those too.
	pending int
	// streams counts HTTP/1.0 responses relayed on hijacked conns
	// (relayUntilClose): fasthttp's Shutdown does not wait for them.
	streams int
	stopped bool       // drain is over: a late tunnel is closed at once
	idle    *sync.Cond // signalled when the last tunnel ends
	memory  memoryReleaser

	// shutdownMu guards shutdownDone, made by the first Shutdown and
	// closed when it is over; shutdownErr is its result, written before.
	shutdownMu   sync.Mutex
	shutdownDone chan struct{}
	shutdownErr  error

	// started is when the gateway was made; recentReloads and
	// recentErrors are for the status page.
	started       time.Time
	recentReloads recentEvents
	recentErrors  recentEvents

	// The logs: lines are queued and written by a goroutine of each log
	// (logSink). errorJSON writes the error log's JSON records.
	logTargets  logTargets
	accessLog   *logSink
	errorLog    *logSink
	errorJSON   *slog.Logger
	errorWriter io.Writer // the error log for parts that format their own lines

	metrics *metrics
}

// New builds a gateway from a validated configuration. Defaults must have
// been applied (config.Load does so).
func New(cfg *config.Config, opts Options) (*Gateway, error) {
	g := &Gateway{
		started:    time.Now(),
		configPath: opts.ConfigPath,
		certPoll:   opts.CertPollInterval,
		bound:      map[string]*boundListener{},
		leaving:    map[*time.Timer]struct{}{},
		tunnels:    shrinkset.New[liveTunnel](),
		logTargets: logTargets{access: opts.AccessLog, errors: opts.ErrorLog},
	}
	g.logTargets.stdout, g.logTargets.stderr = stdStreams(opts.Stdout, opts.Stderr)
	if err := g.openLogs(cfg); err != nil {
		return nil, err
	}
	g.metrics = newMetrics(g)
	g.retired, g.cancelRetired = context.WithCancel(context.Background())
	g.idle = sync.NewCond(&g.mu)
	if g.certPoll <= 0 {
		g.certPoll = defaultCertPoll
	}
	gen, err := g.buildGeneration(cfg, nil)
	if err != nil {
		g.closeLogs()
		return nil, err
	}
	gen.id = 1
	g.starting = gen
	return g, nil
}

// Start binds every listener and serves them in the background. If one
// address cannot be bound, none stays bound.
func (g *Gateway) Start() error {
	gen := g.starting
	g.lmu.Lock()
	defer g.lmu.Unlock()
	added, err := g.bindNew(gen)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		for _, b := range added {
			b.close()
			delete(g.bound, b.key)
		}
		gen.discardACME(nil)
		return err
	}
	if err := gen.resolveNew(context.Background()); err != nil {
		return fail(err)
	}
	adm, err := g.bindAdmin(gen.cfg)
	if err != nil {
		return fail(err)
	}
	r, err := relay.New(relay.Options{Idle: gen.timeouts.idle})
	if err != nil {
		if adm != nil {
			closeAdmin(adm)
		}
		return fail(fmt.Errorf("relay: %w", err))
	}
	g.switchAdmin(adm, gen.cfg.Admin.Address)
	g.relay = r
	g.spare = newSpareFD()
	g.accessLog.start()
	g.errorLog.start()
	gen.setHTTPSPort(g.boundAddr)
	g.gen.Store(gen)
	gen.start(g)
	for _, b := range added {
		b.info.Store(gen.listeners[b.key])
		g.serve(b, gen)
	}
	return nil
}

// bindNew binds the addresses of gen's listeners that are not bound yet
// and returns them; if one cannot be bound, none of them stays bound.
// g.lmu is held.
func (g *Gateway) bindNew(gen *generation) ([]*boundListener, error) {
	var added []*boundListener
	for _, key := range gen.order {
		if g.bound[key] != nil {
			continue
		}
		addr := gen.listeners[key].address
		tcp, err := listenTCP(addr)
		if err != nil {
			for _, b := range added {
				b.close()
				delete(g.bound, b.key)
			}
			return nil, &bindError{address: addr, err: err}
		}
		b := newBoundListener(key, tcp)
		g.bound[key] = b
		added = append(added, b)
	}
	return added, nil
}

// boundAddr is the bound address of the listener with key. g.lmu is held.
func (g *Gateway) boundAddr(key string) net.Addr { return g.bound[key].ln.Addr() }

// serve starts b's accept loop and a server for it. g.lmu is held.
func (g *Gateway) serve(b *boundListener, gen *generation) {
	if err := g.watchListener(b); err != nil {
		// Not seen in practice: epoll takes any open socket.
		g.errorf("listener %s: cannot accept on the event loops: %v", b.ln.Addr(), err)
		b.close()
		return
	}
	g.startServer(b, gen)
}

// startServer puts a new fasthttp server made with gen's settings in front
// of b. g.lmu is held.
func (g *Gateway) startServer(b *boundListener, gen *generation) {
	b.settings = serverSettingsOf(gen)
	b.server = g.newServer(b, b.settings)
	b.view = b.newView()
	srv, view := b.server, b.view
	g.serving.Add(1)
	go func() {
		defer g.serving.Done()
		if err := srv.Serve(view); err != nil {
			g.errorf("serve %s: %v", b.ln.Addr(), err)
		}
	}()
}

func serverSettingsOf(gen *generation) serverSettings {
	return serverSettings{headTimeout: int64(gen.timeouts.handshake), maxHeaderBytes: gen.maxHeaderBytes}
}

// retireServer stops b's current server from taking connections and lets
// it finish its requests in the background, until the end of a drain at
// the latest. g.lmu is held.
func (g *Gateway) retireServer(b *boundListener) {
	srv := b.server
	b.server, b.view = nil, nil
	g.serving.Add(1)
	go func() {
		defer g.serving.Done()
		srv.ShutdownWithContext(g.retired)
	}()
}

// wrapClient makes a client conn what fasthttp reads: under TLS when the
// listener's settings in service say so.
func (g *Gateway) wrapClient(b *boundListener, cc *clientConn) net.Conn {
	if li := g.gen.Load().listener(b); li != nil && li.tls != nil {
		return li.tls.Server(cc)
	}
	return cc
}

// listener returns the settings of the listener b, or nil when gen has
// none for it (a reload removed it).
func (gen *generation) listener(b *boundListener) *listenerInfo { return gen.listeners[b.key] }

func (g *Gateway) newServer(b *boundListener, st serverSettings) *fasthttp.Server {
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if cc := clientConnOf(ctx); cc != nil && cc.decided != nil {
				d := cc.decided
				cc.decided = nil
				g.finishLoopHandshake(ctx, cc, d)
				return
			}
			gen := g.gen.Load()
			li := gen.listener(b)
			if li == nil {
				// A reload removed the listener while this connection
				// was open: its last requests keep its last settings.
				li = b.info.Load()
			}
			g.handle(ctx, gen, li)
		},
		ErrorHandler: g.handleParseError,
		// The client's head is relayed as it came: names unchanged, no
		// Server/Date/Content-Type the upstream did not send.
		DisableHeaderNamesNormalizing: true,
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		DisablePreParseMultipartForm:  true,
		// fasthttp's errors would quote the request head, cookies
		// included, wherever they end up.
		SecureErrorLogMessage: true,
		// ReadBufferSize is also the largest request head (431 beyond).
		ReadBufferSize:    st.maxHeaderBytes,
		StreamRequestBody: true,
		// After a hijack handler returns, fasthttp closes the conn and
		// takes back its read buffer (16 KiB by default) and request
		// context for the next conn. The tunnel detached the conn first
		// (unwrapHijacked), so that close leaves it open; keeping
		// hijacked conns instead would leave a read buffer to the garbage
		// collector at every handshake.
		KeepHijackedConns: false,
		ReadTimeout:       time.Duration(st.headTimeout), // the request head must arrive within it
		IdleTimeout:       clientKeepAlive,
		HeaderReceived: func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
			// A request body (an upload, a long-poll POST) may take as long
			// as the idle timeout, not the handshake timeout.
			//
			// MaxRequestBodySize 1: before it calls the handler, fasthttp
			// reads min(Content-Length, this limit, 8 KiB) bytes of a
			// streamed body (readBodyWithStreaming), so a slow upload
			// reached the upstream only once 8 KiB came. With 1, the
			// handler runs at the first body byte (no setting makes it run
			// at none). The limit bounds nothing else: a longer body is
			// streamed all the same (ContinueReadBodyStream), as bodies
			// over the default 4 MiB always were, and a chunked one is not
			// read ahead at all.
			return fasthttp.RequestConfig{ReadTimeout: g.gen.Load().timeouts.idle, MaxRequestBodySize: 1}
		},
		Logger: fasthttpLogger{g},
		// A worker goroutine keeps the stack its last connection grew
		// (tens of KiB after a handshake) while it waits for the next
		// one; the default 10 s would keep a burst's stacks long after
		// it, past the memory release that follows a mass disconnect.
		MaxIdleWorkerDuration: time.Second,
	}
}

// clientConn is a client's TCP conn. Every write must make progress within
// the idle timeout: fasthttp's WriteTimeout would bound a whole streamed
// response, cutting SSE, while no timeout at all would let a client that
// stopped reading hold a stream and its upstream conn forever.
//
// Under TLS, a wss:// tunnel's relay takes it over (tcpConn.reroute).
type clientConn struct {
	*tcpConn
	write idleDeadline
	// detached: a tunnel took the TCP conn over (unwrapHijacked), so the
	// close fasthttp does after the hijack handler must leave it open.
	detached atomic.Bool
	// remoteIP and remoteAddr are the client's address as text, made on
	// first use: every request on the conn needs them (X-Forwarded-For,
	// balancing, the access log), and formatting costs allocations. The
	// requests of a conn are served one at a time.
	remoteIP, remoteAddr string
	// clientReadEOF tells a request body the client cut at a chunk
	// boundary from a complete one (see writeRequest).
	clientReadEOF
	// upload sends an upload's bytes on to the upstream before a read
	// from the client may wait (see copyUpload).
	upload uploadFlusher
	// handover is what a hijack handler is due to take over; Close
	// releases it if fasthttp closes the conn without running that handler.
	handover handoverSlot

	// For a conn whose handshake began on an event loop (serveConn):
	// replay is what the loop read of it, read first; the first request
	// head was due at headBy, which the next headByUses read deadlines
	// fasthttp sets are held to; decided is what the loop found for that
	// request, for the handler to finish (finishLoopHandshake). The
	// server's goroutine for the conn is their only user.
	replay     []byte
	headBy     time.Time
	headByUses int
	decided    *loopDecision
}

// firstHeadDeadlines is how many read deadlines fasthttp's server sets on
// a new conn before it has read the first request head: one for the
// first byte and one once the conn is active (fasthttp v1.74.0,
// Server.serveConn). The next one, for the body, is not the head's.
const firstHeadDeadlines = 2

// SetReadDeadline holds the first request head's deadlines to headBy: the
// time the head spent before the event loop handed the conn over counts
// against timeouts.handshake too.
func (c *clientConn) SetReadDeadline(t time.Time) error {
	if c.headByUses > 0 {
		c.headByUses--
		if t.IsZero() || t.After(c.headBy) {
			t = c.headBy
		}
	}
	return c.tcpConn.SetReadDeadline(t)
}

// clientConnOf returns the clientConn under the conn a request came on,
// or nil.
func clientConnOf(ctx *fasthttp.RequestCtx) *clientConn { return clientConnUnder(ctx.Conn()) }

// clientConnUnder returns the clientConn c is, or the one under TLS conn
// c, or nil.
func clientConnUnder(c net.Conn) *clientConn {
	switch c := c.(type) {
	case *clientConn:
		return c
	case *tlsterm.Conn:
		cc, _ := c.NetConn().(*clientConn)
		return cc
	}
	return nil
}

// clientAddress returns the client's IP and IP:port as text.
func clientAddress(ctx *fasthttp.RequestCtx) (ip, addr string) {
	cc := clientConnOf(ctx)
	if cc == nil {
		return remoteIP(ctx.RemoteAddr()), ctx.RemoteAddr().String()
	}
	if cc.remoteAddr == "" {
		cc.remoteIP, cc.remoteAddr = remoteIP(cc.RemoteAddr()), cc.RemoteAddr().String()
	}
	return cc.remoteIP, cc.remoteAddr
}

// Close closes the conn unless a tunnel took it over, and releases a
// handover whose hijack handler did not run.
func (c *clientConn) Close() error {
	if c.detached.Load() {
		return nil
	}
	err := c.TCPConn.Close()
	c.handover.closed()
	return err
}

func (c *clientConn) Read(p []byte) (int, error) {
	if c.relayed != nil {
		return c.relayed.Read(p)
	}
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		if c.replay = c.replay[n:]; len(c.replay) == 0 {
			c.replay = nil
		}
		return n, nil
	}
	c.upload.flush()
	n, err := c.tcpConn.Read(p)
	c.note(err)
	return n, err
}

func (c *clientConn) Write(p []byte) (int, error) {
	if c.relayed != nil {
		return c.relayed.Write(p)
	}
	if err := c.write.refresh(c.TCPConn.SetWriteDeadline); err != nil {
		return 0, err
	}
	return c.TCPConn.Write(p)
}

// fasthttpLogger sends fasthttp's own messages to the error log.
type fasthttpLogger struct{ g *Gateway }

// Printf logs a message of fasthttp's, but not its line for a connection
// whose request head could not be read: handleParseError answered that
// request and the access log has it, and the line would quote the head
// where SecureErrorLogMessage does not reach (a request line without a
// space is quoted whole).
func (l fasthttpLogger) Printf(format string, args ...any) {
	if len(args) > 0 {
		if err, ok := args[len(args)-1].(error); ok && strings.HasPrefix(err.Error(), headReadErrorPrefix) {
			return
		}
	}
	l.g.errorf(format, args...)
}

// headReadErrorPrefix begins every error fasthttp's server returns after
// reading part of a request head and failing.
const headReadErrorPrefix = "error when reading request headers"

// connectAllow is the Allow header of the 405 that refuses CONNECT, which
// RFC 9110 requires on a 405. wsgate passes every other method on and
// which ones a resource takes is its upstream's say, so it lists the
// usual ones.
const connectAllow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

// handle is the entry point of every request.
func (g *Gateway) handle(ctx *fasthttp.RequestCtx, gen *generation, li *listenerInfo) {
	if ctx.IsConnect() {
		// A reverse proxy is no tunnel to any host:port a client names;
		// nginx refuses CONNECT with 405 as well.
		g.refuse(ctx, fasthttp.StatusMethodNotAllowed, "CONNECT is not supported")
		ctx.Response.Header.Set("Allow", connectAllow)
		return
	}
	if li.tls == nil && len(gen.acme) > 0 && gen.answerACMEChallenge(ctx) {
		// HTTP-01 comes to port 80, before any redirect or route.
		return
	}
	if li.redirectHTTPS {
		g.redirectToHTTPS(ctx, gen)
		return
	}
	rt := gen.router.Match(string(ctx.Host()), string(ctx.Path()))
	if rt == nil {
		g.refuse(ctx, fasthttp.StatusNotFound, "no route for host "+string(ctx.Host())+" and path "+string(ctx.Path()))
		return
	}
	f := newForwarded(ctx, li, gen.certHeaders)
	if isUpgrade(&ctx.Request.Header) {
		g.serveWebSocket(ctx, rt, f)
		return
	}
	g.serveHTTP(ctx, rt, f)
}

// handleParseError answers a request whose head could not be read. The
// answer is a fixed one-line reason: fasthttp's error quotes the head
// (cookies included) and names the gateway's own address. fasthttp passes
// the read error itself when not one byte of a request came.
func (g *Gateway) handleParseError(ctx *fasthttp.RequestCtx, err error) {
	var tooBig *fasthttp.ErrSmallBuffer
	var handshake *tlsterm.HandshakeError
	var readErr *net.OpError
	switch {
	case errors.As(err, &handshake):
		// A failed TLS handshake (a name with no certificate, a hello
		// without SNI on an acme-only listener, plain HTTP on the TLS
		// port) carries no request: nothing to answer on it (the 400 for
		// plain HTTP is already written) and no request to log.
		// fasthttp's line in the error log says why.
	case errors.As(err, &tooBig):
		g.refuse(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "request head is larger than limits.max_header_bytes")
	case errors.Is(err, os.ErrDeadlineExceeded):
		// No whole head within timeouts.handshake, whether part of one
		// came or none: 408, as HAProxy answers at timeout http-request.
		// A browser that preconnected and sends its request as the 408
		// arrives sends it again on a new connection.
		g.refuse(ctx, fasthttp.StatusRequestTimeout, "request not received in time")
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &readErr):
		// The client ended its stream (or reset it) in the middle of a
		// head; one that only half-closed still reads the answer.
		g.refuse(ctx, fasthttp.StatusBadRequest, "request cut short")
	default:
		g.refuse(ctx, fasthttp.StatusBadRequest, "malformed request")
	}
}

// ActiveTunnels reports how many upgraded connections are open now.
func (g *Gateway) ActiveTunnels() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.tunnels.Len()
}

// Addrs returns the bound address of every listener, in config order.
func (g *Gateway) Addrs() []net.Addr {
	gen := g.gen.Load()
	g.lmu.Lock()
	defer g.lmu.Unlock()
	var addrs []net.Addr
	for _, addr := range gen.order {
		if b := g.bound[addr]; b != nil {
			addrs = append(addrs, b.ln.Addr())
		}
	}
	return addrs
}

// Shutdown stops accepting, lets in-flight HTTP requests finish and waits
// for live tunnels to end, up to the drain timeout or ctx's end, whichever
// comes first; then it closes the tunnels that are left.
//
// Only the first call drains: a later or concurrent call waits for it to
// finish, or for its own ctx to end, and returns its result (or ctx's
// error), so nothing is stopped or closed twice.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.shutdownMu.Lock()
	done, first := g.shutdownDone, g.shutdownDone == nil
	if first {
		done = make(chan struct{})
		g.shutdownDone = done
	}
	g.shutdownMu.Unlock()
	if !first {
		select {
		case <-done:
			return g.shutdownErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	g.shutdownErr = g.drain(ctx)
	close(done)
	return g.shutdownErr
}

// drain is Shutdown's work, done once.
func (g *Gateway) drain(ctx context.Context) error {
	// No reload from here on: the configuration being drained stays.
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	g.draining.Store(true)
	g.leavingMu.Lock()
	for t := range g.leaving {
		t.Stop() // the drain below ends every tunnel
	}
	g.leavingMu.Unlock()
	gen := g.gen.Load()
	if gen == nil {
		g.closeLogs()
		return nil // never started
	}
	ctx, cancel := context.WithTimeout(ctx, gen.timeouts.drain)
	defer cancel()
	// The servers a reload replaced finish their requests by the same
	// deadline as the current ones.
	stopRetired := context.AfterFunc(ctx, g.cancelRetired)
	defer stopRetired()
	var wg sync.WaitGroup
	g.lmu.Lock()
	for _, b := range g.bound {
		// Close the sockets first: a Serve goroutine that has not taken
		// its view yet would miss fasthttp's Shutdown and serve forever.
		b.close()
		if srv := b.server; srv != nil {
			wg.Add(1)
			go func() { defer wg.Done(); srv.ShutdownWithContext(ctx) }()
		}
	}
	g.lmu.Unlock()

	// Wait for the tunnels; a goroutine turns ctx's end into a broadcast so
	// the wait below can see it.
	stop := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		g.idle.Broadcast()
		g.mu.Unlock()
	})
	defer stop()
	g.mu.Lock()
	for (g.tunnels.Len() > 0 || g.pending > 0 || g.streams > 0) && ctx.Err() == nil {
		g.idle.Wait()
	}
	g.stopped = true
	left := make([]liveTunnel, 0, g.tunnels.Len())
	for t := range g.tunnels.All {
		left = append(left, t)
	}
	g.mu.Unlock()
	for _, t := range left {
		t.abort(ClosedDrain)
	}
	// Aborted tunnels end at once; wait for their log lines.
	g.mu.Lock()
	for g.tunnels.Len() > 0 {
		g.idle.Wait()
	}
	g.mu.Unlock()
	wg.Wait()
	g.cancelRetired()
	g.serving.Wait()
	if g.relay != nil {
		g.relay.Stop()
		g.spare.close()
	}
	gen.stop()
	g.lmu.Lock()
	if g.admin != nil {
		closeAdmin(g.admin) // last: /readyz said "draining" until now
		g.admin = nil
	}
	g.lmu.Unlock()
	for _, m := range gen.acme {
		m.Close() // its renewal timers cannot be stopped; this mutes them
	}
	g.closeLogs()
	if len(left) > 0 {
		return fmt.Errorf("drain timeout: closed %d live tunnels", len(left))
	}
	return nil
}

// requestLog is what the access log says of a plain HTTP request or of a
// handshake that did not become a tunnel. It is captured from the request
// context, which fasthttp reuses once the response is written.
type requestLog struct {
	start                     time.Time
	remote, method, pool, uri string
	host                      string
	upstream                  string
	status                    int
	// route is the route matched, or nil; websocket: the request was a
	// handshake (for the metrics).
	route     *Route
	websocket bool
	// failed names the side whose failure cut the exchange short after
	// the status went out ("upstream"), or is empty.
	failed string
}

func (g *Gateway) newRequestLog(ctx *fasthttp.RequestCtx, rt *Route, upstreamAddr string) requestLog {
	_, remote := clientAddress(ctx)
	l := requestLog{
		start: ctx.Time(), remote: remote, method: string(ctx.Method()),
		pool: "-", uri: string(ctx.RequestURI()), upstream: upstreamAddr, status: ctx.Response.StatusCode(),
		host: string(ctx.Host()), route: rt,
	}
	if rt != nil {
		l.pool = rt.Pool.Name
	}
	if l.start.IsZero() {
		// fasthttp sets the time only once a request head is read: an
		// unparsable head, or none before the timeout, has none, and no
		// method or URI either (fasthttp's defaults would say GET /).
		l.start = time.Now()
		l.method, l.uri = "-", "-"
	}
	return l
}

// writeRequestLog writes one access log line; size is the response body's.
func (g *Gateway) writeRequestLog(l requestLog, size int64) {
	g.metrics.request(&l)
	d := time.Since(l.start)
	if !g.accessLog.json.Load() {
		g.accessLog.write(newLogLine(l.start).word(l.remote).word(l.method).word(l.pool).word(l.uri).
			str("upstream", l.upstream).int("status", int64(l.status)).
			str("duration", d.Round(time.Millisecond).String()).int("bytes", size).failed(l.failed).end())
		return
	}
	b := newJSONLine(l.start, "http").str("client", l.remote).opt("method", l.method).str("host", l.host).
		opt("path", l.uri).str("route", routeName(l.route)).opt("upstream", l.pool).opt("server", l.upstream).
		int("status", int64(l.status)).ms("duration_ms", d).int("bytes", size)
	if l.failed != "" {
		b = b.str("failed", l.failed)
	}
	g.accessLog.write(b.end())
}
