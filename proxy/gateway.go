// Package proxy is wsgate's data plane: listeners, routing, WebSocket
// handshake forwarding, the tunnel that carries upgraded connections, and
// the streaming plain HTTP reverse proxy.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/acmecert"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/shrinkset"
	"github.com/wsgate/wsgate/relay"
	"github.com/wsgate/wsgate/tlsterm"
	"github.com/wsgate/wsgate/upstream"
)

// clientKeepAlive is how long an idle keep-alive client connection is kept
// between requests; nginx's keepalive_timeout default.
const clientKeepAlive = 75 * time.Second

// Options are the parts of a Gateway that do not come from the config file.
type Options struct {
	// AccessLog receives one line per request or tunnel; nil means stdout.
	AccessLog io.Writer
	// ErrorLog receives upstream failures and other errors; nil means stderr.
	ErrorLog io.Writer
	// CertPollInterval is how often TLS certificate files are checked for
	// changes; 0 means 2s.
	CertPollInterval time.Duration
}

// defaultCertPoll: a renewed certificate is in use within seconds, for
// the cost of reading a few KiB.
const defaultCertPoll = 2 * time.Second

type timeouts struct {
	connect, handshake, idle, drain time.Duration
}

// Gateway is a running wsgate data plane built from one configuration.
type Gateway struct {
	router         *Router
	timeouts       timeouts
	maxHeaderBytes int
	clientsMu      sync.Mutex
	clients        map[*upstream.Server]*fasthttp.HostClient // a server belongs to one pool

	discoveries    []*upstream.Discovery       // pools that follow DNS
	background     []func(ctx context.Context) // health checks, started by Start
	stopBackground context.CancelFunc

	listenerInfos []*listenerInfo
	certPoll      time.Duration
	listeners     []net.Listener
	servers       []*fasthttp.Server
	wg            sync.WaitGroup // Serve loops

	// certHeaders are every listener's client-certificate header name,
	// removed from requests on all listeners.
	certHeaders certHeaderNames

	mu      sync.Mutex
	tunnels *shrinkset.Set[liveTunnel]
	relay   *relay.Relay // event loops for plain TCP tunnels
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

	accessLog   *accessLog
	errorLog    *log.Logger
	errorWriter io.Writer           // behind errorLog, for parts that format their own lines
	acme        []*acmecert.Manager // of the TLS listeners with acme
}

// New builds a gateway from a validated configuration. Defaults must have
// been applied (config.Load does so).
func New(cfg *config.Config, opts Options) (*Gateway, error) {
	if opts.AccessLog == nil {
		opts.AccessLog = os.Stdout
	}
	if opts.ErrorLog == nil {
		opts.ErrorLog = os.Stderr
	}
	g := &Gateway{
		timeouts: timeouts{
			connect:   cfg.Timeouts.Connect.Std(),
			handshake: cfg.Timeouts.Handshake.Std(),
			idle:      cfg.Timeouts.Idle.Std(),
			drain:     cfg.Timeouts.Drain.Std(),
		},
		maxHeaderBytes: cfg.Limits.MaxHeaderBytes,
		certPoll:       opts.CertPollInterval,
		clients:        map[*upstream.Server]*fasthttp.HostClient{},
		tunnels:        shrinkset.New[liveTunnel](),
		accessLog:      newAccessLog(opts.AccessLog),
		errorLog:       log.New(opts.ErrorLog, "wsgate: ", log.LstdFlags),
		errorWriter:    opts.ErrorLog,
	}
	g.idle = sync.NewCond(&g.mu)
	if g.certPoll <= 0 {
		g.certPoll = defaultCertPoll
	}
	for _, lc := range cfg.Listeners {
		li, err := g.newListenerInfo(lc)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", lc.Address, err)
		}
		g.listenerInfos = append(g.listenerInfos, li)
	}
	g.certHeaders = clientCertHeaderNames(cfg.Listeners)

	pools := map[string]*upstream.Pool{}
	policies := map[string]*Policy{}
	upstreamTLSs := map[string]*upstreamTLS{}
	for name, uc := range cfg.Upstreams {
		ut, err := newUpstreamTLS(name, uc.TLS)
		if err != nil {
			return nil, err
		}
		pools[name] = g.newPool(name, uc, cfg.Resolver, ut)
		policies[name] = newPolicy(uc)
		upstreamTLSs[name] = ut
	}
	var routes []*Route
	for _, rc := range cfg.Routes {
		pool, ok := pools[rc.Upstream]
		if !ok {
			return nil, fmt.Errorf("route %s%s: upstream %q is not defined", rc.Host, rc.Path, rc.Upstream)
		}
		routes = append(routes, &Route{Host: rc.Host, Path: rc.Path, Pool: pool, Policy: policies[rc.Upstream],
			RawTunnel: rc.Tunnel == config.TunnelRaw, tls: upstreamTLSs[rc.Upstream]})
	}
	g.router = NewRouter(routes)
	return g, nil
}

// newPool builds an upstream's pool. Servers given as IP addresses are
// fixed; names and SRV records are resolved when the gateway starts and
// again every resolve_interval. Health checks also start with the gateway;
// they speak TLS when the upstream does (ut not nil).
func (g *Gateway) newPool(name string, uc *config.Upstream, resolver string, ut *upstreamTLS) *upstream.Pool {
	opts := upstream.Options{
		Balance: uc.Balance, HashBoundedLoad: uc.HashBoundedLoad,
		FailTimeout: uc.FailTimeout.Std(),
	}
	if uc.MaxFails != nil {
		opts.MaxFails = *uc.MaxFails
	}
	var specs []upstream.ServerSpec
	static := true
	for _, sc := range uc.Servers {
		specs = append(specs, upstream.ServerSpec{Address: sc.Address, SRV: sc.SRV, Weight: sc.Weight,
			MaxConns: sc.MaxConns, Backup: sc.Backup, Down: sc.Down})
		if sc.SRV != "" || !isIPAddress(sc.Address) {
			static = false
		}
	}
	if static {
		var servers []*upstream.Server
		for _, sp := range specs {
			servers = append(servers, &upstream.Server{Address: sp.Address, Weight: sp.Weight,
				MaxConns: sp.MaxConns, Backup: sp.Backup, Down: sp.Down})
		}
		pool := upstream.NewPool(name, servers, opts)
		g.addHealthCheck(pool, uc.HealthCheck, ut)
		return pool
	}
	pool := upstream.NewPool(name, nil, opts)
	g.discoveries = append(g.discoveries,
		upstream.NewDiscovery(pool, specs, resolver, uc.ResolveInterval.Std(), g.errorf))
	g.addHealthCheck(pool, uc.HealthCheck, ut)
	return pool
}

// addHealthCheck arranges for pool's health check to run from Start.
func (g *Gateway) addHealthCheck(pool *upstream.Pool, hc *config.HealthCheck, ut *upstreamTLS) {
	if hc == nil {
		return
	}
	probe := httpProbe(hc.Path, hc.ExpectStatus, ut)
	if hc.WebSocket {
		probe = websocketProbe(hc.Path, ut)
	}
	cc := upstream.CheckConfig{Interval: hc.Interval.Std(), Timeout: hc.Timeout.Std(), Healthy: hc.Healthy, Unhealthy: hc.Unhealthy}
	g.background = append(g.background, func(ctx context.Context) { pool.StartChecks(ctx, cc, probe, g.errorf) })
}

// isIPAddress reports whether host:port names an IP address (or no host),
// which needs no resolving.
func isIPAddress(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && (host == "" || net.ParseIP(host) != nil)
}

// clientFor returns the HTTP client of rt's server srv, made on first use:
// servers come and go with discovery. Clients are per upstream, not per
// address alone: two upstreams may reach one address, one over TLS.
func (g *Gateway) clientFor(rt *Route, srv *upstream.Server) *fasthttp.HostClient {
	g.clientsMu.Lock()
	defer g.clientsMu.Unlock()
	hc, ok := g.clients[srv]
	if !ok {
		// A new server: forget the clients of servers that left their
		// pool and have nothing in flight, or a discovery that churns
		// (pods come and go) would grow the map for ever.
		for s := range g.clients {
			if s.Removed() && s.Active() == 0 {
				delete(g.clients, s)
			}
		}
		hc = g.newHostClient(srv, rt.tls)
		g.clients[srv] = hc
	}
	return hc
}

// Start binds every listener and serves them in the background. If one
// address cannot be bound, none stays bound.
func (g *Gateway) Start() error {
	for _, li := range g.listenerInfos {
		tcp, err := net.Listen("tcp", li.address)
		if err != nil {
			g.closeListeners()
			return fmt.Errorf("listen %s: %w", li.address, err)
		}
		var ln net.Listener = &clientListener{Listener: newRetryingListener(tcp, g.errorf), idle: g.timeouts.idle}
		if term := li.tls; term != nil {
			ln = term.Listener(ln)
		}
		g.listeners = append(g.listeners, ln)
	}
	bg, cancel := context.WithCancel(context.Background())
	for _, d := range g.discoveries {
		// The first resolve happens now: a name that resolves to nothing
		// is a configuration error, better found before serving.
		rctx, rcancel := context.WithTimeout(bg, 10*time.Second)
		err := d.ResolveNow(rctx)
		rcancel()
		if err != nil {
			cancel()
			g.closeListeners()
			return err
		}
	}
	r, err := relay.New(relay.Options{Idle: g.timeouts.idle})
	if err != nil {
		cancel()
		g.closeListeners()
		return fmt.Errorf("relay: %w", err)
	}
	for _, d := range g.discoveries {
		go d.Run(bg)
	}
	for _, run := range g.background {
		go run(bg)
	}
	for _, li := range g.listenerInfos {
		if li.tls != nil {
			go li.tls.Watch(bg, g.certPoll)
		}
	}
	g.stopBackground = cancel
	g.relay = r
	g.accessLog.start()
	for i, ln := range g.listeners {
		srv := g.newServer(g.listenerInfos[i])
		g.servers = append(g.servers, srv)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := srv.Serve(ln); err != nil {
				g.errorf("serve %s: %v", ln.Addr(), err)
			}
		}()
	}
	return nil
}

func (g *Gateway) closeListeners() {
	for _, ln := range g.listeners {
		ln.Close()
	}
	g.listeners = nil
}

func (g *Gateway) newServer(li *listenerInfo) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:      func(ctx *fasthttp.RequestCtx) { g.handle(ctx, li) },
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
		ReadBufferSize:    g.maxHeaderBytes,
		StreamRequestBody: true,
		// After a hijack handler returns, fasthttp closes the conn and
		// takes back its read buffer (16 KiB by default) and request
		// context for the next conn. The tunnel detached the conn first
		// (unwrapHijacked), so that close leaves it open; keeping
		// hijacked conns instead would leave a read buffer to the garbage
		// collector at every handshake.
		KeepHijackedConns: false,
		ReadTimeout:       g.timeouts.handshake, // the request head must arrive within it
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
			return fasthttp.RequestConfig{ReadTimeout: g.timeouts.idle, MaxRequestBodySize: 1}
		},
		Logger: fasthttpLogger{g},
		// A worker goroutine keeps the stack its last connection grew
		// (tens of KiB after a handshake) while it waits for the next
		// one; the default 10 s would keep a burst's stacks long after
		// it, past the memory release that follows a mass disconnect.
		MaxIdleWorkerDuration: time.Second,
	}
}

// clientListener hands fasthttp conns whose every write must make progress
// within the idle timeout: fasthttp's WriteTimeout would bound a whole
// streamed response, cutting SSE, while no timeout at all would let a
// client that stopped reading hold a stream and its upstream conn forever.
type clientListener struct {
	net.Listener
	idle time.Duration
}

func (l *clientListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil // not from net.Listen("tcp"): nothing of ours applies
	}
	return &clientConn{pollConn: newPollConn(tcp), write: idleDeadline{idle: l.idle}}, nil
}

// clientConn is a client's TCP conn. Its reads can be told not to wait
// (pollConn), so a wss:// tunnel idles without a relay buffer, as one to a
// TLS upstream does.
type clientConn struct {
	*pollConn
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
	c.upload.flush()
	n, err := c.pollConn.Read(p)
	c.note(err)
	return n, err
}

func (c *clientConn) Write(p []byte) (int, error) {
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
func (g *Gateway) handle(ctx *fasthttp.RequestCtx, li *listenerInfo) {
	if ctx.IsConnect() {
		// A reverse proxy is no tunnel to any host:port a client names;
		// nginx refuses CONNECT with 405 as well.
		g.refuse(ctx, fasthttp.StatusMethodNotAllowed, "CONNECT is not supported")
		ctx.Response.Header.Set("Allow", connectAllow)
		return
	}
	if li.tls == nil && len(g.acme) > 0 && g.answerACMEChallenge(ctx) {
		// HTTP-01 comes to port 80, before any redirect or route.
		return
	}
	if li.redirectHTTPS {
		g.redirectToHTTPS(ctx)
		return
	}
	rt := g.router.Match(string(ctx.Host()), string(ctx.Path()))
	if rt == nil {
		g.refuse(ctx, fasthttp.StatusNotFound, "no route for host "+string(ctx.Host())+" and path "+string(ctx.Path()))
		return
	}
	f := newForwarded(ctx, li, g.certHeaders)
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
	var addrs []net.Addr
	for _, ln := range g.listeners {
		addrs = append(addrs, ln.Addr())
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
	ctx, cancel := context.WithTimeout(ctx, g.timeouts.drain)
	defer cancel()
	// Close the listeners here too: a Serve goroutine that has not taken
	// its listener yet would miss fasthttp's Shutdown and serve forever.
	for _, ln := range g.listeners {
		ln.Close()
	}
	var wg sync.WaitGroup
	for _, srv := range g.servers {
		wg.Add(1)
		go func() { defer wg.Done(); srv.ShutdownWithContext(ctx) }()
	}

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
	g.wg.Wait()
	if g.relay != nil {
		g.relay.Stop()
	}
	if g.stopBackground != nil {
		g.stopBackground()
	}
	for _, m := range g.acme {
		m.Close() // its renewal timers cannot be stopped; this mutes them
	}
	g.accessLog.close()
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
	upstream                  string
	status                    int
	// failed names the side whose failure cut the exchange short after
	// the status went out ("upstream"), or is empty.
	failed string
}

func (g *Gateway) newRequestLog(ctx *fasthttp.RequestCtx, rt *Route, upstreamAddr string) requestLog {
	_, remote := clientAddress(ctx)
	l := requestLog{
		start: ctx.Time(), remote: remote, method: string(ctx.Method()),
		pool: "-", uri: string(ctx.RequestURI()), upstream: upstreamAddr, status: ctx.Response.StatusCode(),
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
	g.accessLog.write(newLogLine(l.start).word(l.remote).word(l.method).word(l.pool).word(l.uri).
		str("upstream", l.upstream).int("status", int64(l.status)).
		str("duration", time.Since(l.start).Round(time.Millisecond).String()).int("bytes", size).failed(l.failed).end())
}

func (g *Gateway) errorf(format string, args ...any) { g.errorLog.Printf(format, args...) }
