package upstream

import (
	"context"
	"sync"
	"time"
)

// Probe checks one server at address (host:port) and returns nil when it
// is healthy. The probe itself (an HTTP GET, a WebSocket handshake) lives
// with the proxy, which speaks HTTP; the pool only schedules and judges.
// A probe must return once ctx is done.
type Probe func(ctx context.Context, address string) error

// CheckConfig tunes active health checks. The caller applies the defaults
// (5s, 2s, 2, 3); every field must be positive.
type CheckConfig struct {
	// Interval is the time between two rounds of probes.
	Interval time.Duration
	// Timeout bounds one probe.
	Timeout time.Duration
	// Healthy consecutive passes bring a down server back up.
	Healthy int
	// Unhealthy consecutive failures put an up server down.
	Unhealthy int
}

// maxConcurrentProbes bounds the probes of one round, so that a pool of
// hundreds of discovered servers does not open hundreds of sockets at once.
const maxConcurrentProbes = 16

// StartChecks starts the pool's active health checks in one goroutine and
// returns: every Interval it probes each current server (the list is read
// again each round, so servers that discovery adds or removes are
// followed), judges the results with the server's health state, and logs
// each change of state once through logf. A server starts up, before its
// first probe. The checks stop when ctx ends.
func (p *Pool) StartChecks(ctx context.Context, cfg CheckConfig, probe Probe, logf func(format string, args ...any)) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	go func() {
		t := time.NewTicker(cfg.Interval)
		defer t.Stop()
		for {
			// The first round runs at once: a server that is down when
			// the gateway starts should not wait an interval to be found.
			p.checkRound(ctx, cfg, probe, logf)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// checkRound probes every current server, at most maxConcurrentProbes at
// a time, and returns when all probes have.
func (p *Pool) checkRound(ctx context.Context, cfg CheckConfig, probe Probe, logf func(string, ...any)) {
	sem := make(chan struct{}, maxConcurrentProbes)
	var wg sync.WaitGroup
	for _, s := range p.Servers() {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		// Both cases may have been ready; start no probe after cancel.
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			p.checkOne(ctx, cfg, probe, logf, s)
		})
	}
	wg.Wait()
}

func (p *Pool) checkOne(ctx context.Context, cfg CheckConfig, probe Probe, logf func(string, ...any), s *Server) {
	pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	err := probe(pctx, s.Address)
	cancel()
	if ctx.Err() != nil {
		// Shutting down: the probe was cut short by us, not by the
		// server, so it says nothing about the server's health.
		return
	}
	changed, streak := s.health.probed(err == nil, cfg.Healthy, cfg.Unhealthy)
	switch {
	case !changed:
	case err != nil:
		logf("upstream %s server %s: health check failed %d times (%v): down", p.Name, s.Address, streak, err)
	default:
		logf("upstream %s server %s: health check passed %d times: up", p.Name, s.Address, streak)
	}
}
