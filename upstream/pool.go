// Package upstream keeps pools of upstream servers and chooses among them.
// It knows nothing of HTTP: the proxy asks a Pool for a server, tells it
// which servers it already tried, and holds a lease while it uses one.
package upstream

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrNoServer is returned by Pick when every server was already tried.
var ErrNoServer = errors.New("no upstream server left to try")

// Server is one upstream server of a pool.
type Server struct {
	// Address is the host:port the gateway dials.
	Address string
	// Weight is the server's share of new connections relative to the
	// other servers of its pool.
	Weight int

	active atomic.Int64 // leases held: live tunnels and in-flight requests

	// current is the smooth weighted round robin counter, guarded by the
	// pool's mutex.
	current int
}

// Active reports how many leases (live tunnels and in-flight requests) the
// server holds now.
func (s *Server) Active() int64 { return s.active.Load() }

// Acquire records that the caller started using s; call Release when done.
func (s *Server) Acquire() { s.active.Add(1) }

// Release ends a lease taken with Acquire.
func (s *Server) Release() { s.active.Add(-1) }

// Pool is a named set of servers with a selection policy.
type Pool struct {
	Name string

	mu      sync.Mutex
	servers []*Server
}

// NewPool returns a pool over servers. A weight below 1 counts as 1.
func NewPool(name string, servers []*Server) *Pool {
	for _, s := range servers {
		if s.Weight < 1 {
			s.Weight = 1
		}
	}
	return &Pool{Name: name, servers: servers}
}

// Servers returns the pool's servers. The slice must not be modified.
func (p *Pool) Servers() []*Server { return p.servers }

// Pick chooses the next server by smooth weighted round robin (nginx's
// algorithm: every server's counter grows by its weight, the largest wins
// and pays back the total), skipping the servers in tried, so a caller
// that retries after a failure never gets the same server twice.
func (p *Pool) Pick(tried []*Server) (*Server, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var best *Server
	total := 0
	for _, s := range p.servers {
		if contains(tried, s) {
			continue
		}
		s.current += s.Weight
		total += s.Weight
		if best == nil || s.current > best.current {
			best = s
		}
	}
	if best == nil {
		return nil, ErrNoServer
	}
	best.current -= total
	return best, nil
}

func contains(list []*Server, s *Server) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
