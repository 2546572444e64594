// Package upstream keeps pools of upstream servers and chooses among them.
// It knows nothing of HTTP: the proxy describes a new connection with a
// Request (a hash key, a sticky token, the client's IP), asks the pool for
// a server, holds a lease while it uses it, and reports failures back.
package upstream

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of Pick.
var (
	// ErrNoServer: every usable server was tried already, or none is usable
	// (all down): the proxy answers 502.
	ErrNoServer = errors.New("no upstream server left to try")
	// ErrAllFull: usable servers exist but all are at max_conns: 503.
	ErrAllFull = errors.New("every upstream server is at max_conns")
)

// Settings are a server's configured options. A server's settings are
// replaced as a whole, never modified, so that the lock-free paths
// (Acquire, health checks) read a consistent set while discovery or a
// reload changes them.
type Settings struct {
	// Weight is the server's share relative to the other servers of its
	// pool (1 when below 1).
	Weight int
	// MaxConns caps the leases (live tunnels and in-flight requests) the
	// server may hold; 0 means no cap. A full server is skipped.
	MaxConns int
	// Backup servers are used only when no primary is usable.
	Backup bool
	// Down marks a server out of service by configuration.
	Down bool
}

// normalized returns st with a weight below 1 counted as 1.
func (st Settings) normalized() *Settings {
	st.Weight = max(st.Weight, 1)
	return &st
}

// defaultSettings are those of a Server made without NewServer.
var defaultSettings = Settings{Weight: 1}

// Server is one upstream server of a pool. Make it with NewServer; a
// Server with only an Address has weight 1 and no other setting.
type Server struct {
	// Address is the host:port the gateway dials; it names the server
	// within its pool and never changes.
	Address string

	settings atomic.Pointer[Settings] // replaced whole by SetServers; nil: defaultSettings
	active   atomic.Int64             // leases held
	removed  atomic.Bool              // gone from discovery: no new connections
	token    string                   // sticky cookie value naming this server; set before the pool publishes it
	current  int                      // smooth weighted round robin counter (round_robin, least_conn ties); pool mutex
	health   health                   // passive and active health state
}

// NewServer returns a server at address with settings st (a weight below
// 1 counts as 1).
func NewServer(address string, st Settings) *Server {
	s := &Server{Address: address}
	s.settings.Store(st.normalized())
	return s
}

// Settings returns the server's current settings.
func (s *Server) Settings() Settings { return *s.cfg() }

// cfg returns the published settings. They change only under the pool's
// lock (SetServers): code without it reads them once per decision, so as
// not to mix two versions.
func (s *Server) cfg() *Settings {
	if st := s.settings.Load(); st != nil {
		return st
	}
	return &defaultSettings
}

// Active reports how many leases (live tunnels and in-flight requests) the
// server holds now.
func (s *Server) Active() int64 { return s.active.Load() }

// Acquire takes a lease on s (the caller starts a tunnel or a request on
// it) unless s is at MaxConns, and reports whether it did. The check and
// the count are one atomic step, so concurrent callers cannot overshoot
// MaxConns between Pick and Acquire. Call Release when done.
func (s *Server) Acquire() bool {
	maxConns := int64(s.cfg().MaxConns)
	if maxConns <= 0 {
		s.active.Add(1)
		return true
	}
	for {
		n := s.active.Load()
		if n >= maxConns {
			return false
		}
		if s.active.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release ends a lease taken with Acquire.
func (s *Server) Release() { s.active.Add(-1) }

// Removed reports whether s left its pool (gone from DNS, or from the
// configuration). A server that returns while it still holds leases is the
// same Server again, no longer removed; one that returns after its last
// lease ended is a new Server.
func (s *Server) Removed() bool { return s.removed.Load() }

// Token is the opaque sticky-cookie value that names s within its pool.
func (s *Server) Token() string { return s.token }

// Options are a pool's policies.
type Options struct {
	// Balance names the balancer: "round_robin" (smooth weighted round
	// robin, also when empty), "least_conn" or "hash" (weighted rendezvous
	// hashing of Request.Key); Balancers lists them. Any other name is
	// an error of NewPool and Configure.
	Balance string
	// HashBoundedLoad, when > 0 with "hash", caps each server at this
	// factor of the mean load (consistent hashing with bounded loads);
	// values below 1 count as 1, since no cap below the mean can be met.
	HashBoundedLoad float64
	// MaxFails failures within FailTimeout mark a server down for
	// FailTimeout (nginx's max_fails/fail_timeout); MaxFails 0 disables.
	MaxFails    int
	FailTimeout time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Request describes the connection or request to place.
type Request struct {
	// ClientIP is the client's address; the hash key when Key is empty.
	ClientIP string
	// Key is the value of the upstream's hash_key for this request.
	Key string
	// Sticky is the token the client's sticky cookie carries, if any.
	Sticky string
}

// hashKey is the key the hash balancer places r by: Key, or the client's
// address when the request carries none.
func (r *Request) hashKey() string {
	if r.Key == "" {
		return r.ClientIP
	}
	return r.Key
}

// Pool is a named set of servers with a selection policy.
type Pool struct {
	Name string

	mu   sync.Mutex
	opts Options  // replaced whole by Configure; guarded by mu
	bal  balancer // replaced by Configure; it and its state guarded by mu
	// servers is replaced, never modified, so readers may keep a copy.
	servers []*Server
	// cands is Pick's candidate list, reused under mu with room for every
	// server so that Pick never allocates. A stack array would not do:
	// the list is handed to the balancer through an interface, so escape
	// analysis would move it to the heap on every call.
	cands []*Server
	// retired holds, by address, the servers SetServers dropped while
	// they still held leases: listed again, such a server comes back as
	// the same object, so its live tunnels, health and sticky token carry
	// on. A server is forgotten once it holds no lease.
	retired map[string]*Server
}

// NewPool returns a pool over servers with the policies opts, or an
// error when opts.Balance names no balancer. Weights below 1 count as 1.
func NewPool(name string, servers []*Server, opts Options) (*Pool, error) {
	p := &Pool{Name: name}
	if err := p.Configure(opts); err != nil {
		return nil, err
	}
	p.SetServers(servers)
	return p, nil
}

// Configure replaces the pool's policies (a reload): a new balancer with
// fresh state, and the bound, max_fails and fail_timeout that Pick and
// ReportFailure use from then on. The servers stay, with their leases,
// health and sticky tokens. An unknown balance is an error and leaves the
// pool as it was.
func (p *Pool) Configure(opts Options) error {
	bal, err := newBalancer(opts)
	if err != nil {
		return fmt.Errorf("upstream %s: %w", p.Name, err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opts, p.bal = opts, bal
	for _, s := range p.servers {
		s.current = 0 // the smooth round robin counters are the balancers' state
	}
	return nil
}

// Servers returns the pool's current servers. The slice must not be
// modified.
func (p *Pool) Servers() []*Server {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.servers
}

// SetServers replaces the pool's servers (discovery, reload). A server
// whose address is already in the pool keeps its object, and so its
// leases, health and counters, and takes the listed server's settings;
// servers that are no longer listed are marked removed: they take no new
// connections, while their live tunnels carry on until they end. A
// removed server listed again while it still holds leases is revived:
// the same object, no longer removed.
func (p *Pool) SetServers(list []*Server) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := make(map[string]*Server, len(p.servers))
	for _, s := range p.servers {
		old[s.Address] = s
	}
	next := make([]*Server, 0, len(list))
	for _, s := range list {
		st := s.cfg().normalized()
		if prev, ok := old[s.Address]; ok {
			delete(old, s.Address)
			s = prev
		} else if prev, ok := p.retired[s.Address]; ok {
			delete(p.retired, s.Address)
			s = prev
		} else if token := serverToken(p.Name, s.Address); s.token != token {
			// A server new to the pool. Written only when it differs:
			// a caller may hand back a server the pool forgot, whose
			// token the proxy may still be reading.
			s.token = token
		}
		if *s.cfg() != *st {
			s.settings.Store(st)
		}
		s.removed.Store(false)
		next = append(next, s)
	}
	for addr, s := range old {
		s.removed.Store(true)
		if p.retired == nil {
			p.retired = map[string]*Server{}
		}
		p.retired[addr] = s
	}
	for addr, s := range p.retired {
		// Pick no longer offers a removed server, so one without
		// leases has nothing left to carry on. (An Acquire racing the
		// removal at worst makes a later return a new object.)
		if s.Active() == 0 {
			delete(p.retired, addr)
		}
	}
	p.servers = next
	p.cands = make([]*Server, 0, len(next))
}

// ByToken returns the server a sticky token names, or nil.
func (p *Pool) ByToken(token string) *Server {
	if token == "" {
		return nil
	}
	for _, s := range p.Servers() {
		if s.token == token {
			return s
		}
	}
	return nil
}

// Pick chooses a server for r, never one in tried (so a retry goes
// elsewhere): a valid sticky token's server while it is usable, untried
// and not full, otherwise the balancer's choice among the candidates.
//
// Candidates are the usable (not Down, not removed, healthy), untried,
// not full servers of one tier: the primaries, or the backups when no
// primary is left to try (all down, or all already tried for this
// request). Pick returns ErrAllFull when usable untried servers exist but
// all are at max_conns, and ErrNoServer when there are none.
//
// Full primaries do not bring the backups in, unlike nginx, where a backup
// also absorbs overload: a 503 with Retry-After makes the overload visible
// rather than pouring it onto a standby sized for failover. Primaries that
// were tried and failed do, as in nginx: a retry may reach a backup even
// when max_fails has not yet taken the failed primary out.
//
// A sticky token naming a usable backup is honoured even after primaries
// come back, as HAProxy does with cookies: moving a live session costs
// more than leaving it on the standby.
func (p *Pool) Pick(r *Request, tried []*Server) (*Server, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.opts.Now()
	if s := p.byTokenLocked(r.Sticky); s != nil && p.usable(s, now) && !contains(tried, s) && !s.full() {
		return s, nil
	}
	cands, open := p.candidates(false, tried, now)
	if open == 0 {
		cands, open = p.candidates(true, tried, now)
	}
	switch {
	case len(cands) > 0:
		return p.bal.pick(cands, r.hashKey()), nil
	case open > 0:
		return nil, ErrAllFull
	default:
		return nil, ErrNoServer
	}
}

// candidates fills p.cands with the servers of one tier (backups or
// primaries) that may take a new connection, and counts the tier's usable
// servers not tried yet (full or not).
func (p *Pool) candidates(backup bool, tried []*Server, now time.Time) (cands []*Server, open int) {
	cands = p.cands[:0]
	for _, s := range p.servers {
		if s.cfg().Backup != backup || !p.usable(s, now) {
			continue
		}
		if contains(tried, s) {
			continue
		}
		open++
		if !s.full() {
			cands = append(cands, s)
		}
	}
	return cands, open
}

func (p *Pool) byTokenLocked(token string) *Server {
	if token == "" {
		return nil
	}
	for _, s := range p.servers {
		if s.token == token {
			return s
		}
	}
	return nil
}

// usable: in service and, as far as health knows, up.
// Usable counts the servers that may take a new connection now, full or
// not: in service and, as far as health knows, up (GET /readyz).
func (p *Pool) Usable() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now, n := p.opts.Now(), 0
	for _, s := range p.servers {
		if p.usable(s, now) {
			n++
		}
	}
	return n
}

// Why says why s takes no new connections now, or "" when it does (full
// or not), for the status page.
func (p *Pool) Why(s *Server) string {
	switch {
	case s.cfg().Down:
		return "down in the configuration"
	case s.removed.Load():
		return "removed from the pool"
	}
	return s.health.why(p.now())
}

func (p *Pool) now() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opts.Now()
}

// ServerUsable reports whether s may take a new connection now, full or
// not, as Usable counts it (GET /metrics).
func (p *Pool) ServerUsable(s *Server) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.usable(s, p.opts.Now())
}

func (p *Pool) usable(s *Server, now time.Time) bool {
	return !s.cfg().Down && !s.removed.Load() && s.health.up(now)
}

func (s *Server) full() bool {
	maxConns := int64(s.cfg().MaxConns)
	return maxConns > 0 && s.active.Load() >= maxConns
}

// ReportFailure records a failed attempt on s (dial error, handshake
// timeout, 5xx answer to a handshake) for passive health.
func (p *Pool) ReportFailure(s *Server) {
	// One snapshot of the options, which Configure may replace.
	p.mu.Lock()
	now, maxFails, failTimeout := p.opts.Now(), p.opts.MaxFails, p.opts.FailTimeout
	p.mu.Unlock()
	s.health.fail(now, maxFails, failTimeout)
}

// ReportSuccess records a successful attempt on s.
func (p *Pool) ReportSuccess(s *Server) { s.health.succeed() }

func contains(list []*Server, s *Server) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
