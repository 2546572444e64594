package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/upstream"
)

// Reload reads the configuration file again and, when it is valid, puts it
// in service in place of the current one, without closing a socket:
//
//   - The file is read and validated completely first, by the rules of
//     wsgate -check; new listener addresses are bound and new DNS names
//     resolved. If any of it fails, nothing changes and the error lists
//     each problem as FILE:LINE: KEY: message.
//   - Then the new generation replaces the old one at once: new
//     connections and requests use it, while live tunnels keep their
//     upstream connection and requests in flight complete.
//   - Pools are carried by name and servers by address: leases, passive
//     health and sticky tokens carry on. A server that left (or whose
//     pool or route was removed) takes no new connections, and its live
//     tunnels get Close 1001 at timeouts.drain after the reload.
//   - A kept listener keeps its socket; a new one is bound; a removed one
//     stops accepting while its live tunnels carry on.
//
// Reload returns a one-line summary of what changed. Reloads run one at a
// time.
func (g *Gateway) Reload() (_ string, err error) {
	defer func() { g.metrics.reloaded(err) }()
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	if g.draining.Load() {
		return "", errDraining
	}
	if g.configPath == "" {
		return "", errNoConfigFile
	}
	if g.gen.Load() == nil {
		return "", errNotStarted
	}
	g.reloads++
	n := g.reloads
	summary, err := g.reload()
	if err != nil {
		g.recentReloads.add(Event{Time: time.Now(), Text: fmt.Sprintf("reload %d: failed: %v", n, err)})
		g.errorf("reload %d: failed; the configuration in service is unchanged:\n%v", n, err)
		return "", err
	}
	g.recentReloads.add(Event{Time: time.Now(), Text: fmt.Sprintf("reload %d: ok: %s", n, summary), OK: true})
	g.infof("reload %d: ok: %s", n, summary)
	return summary, nil
}

// reload is Reload's work; g.reloadMu is held.
func (g *Gateway) reload() (string, error) {
	cfg, err := config.Load(g.configPath)
	if err != nil {
		return "", err
	}
	for _, w := range cfg.Warnings {
		g.warnf("warning: %s", w)
	}
	prev := g.gen.Load()
	next, err := g.buildGeneration(cfg, prev)
	if err != nil {
		return "", err
	}
	next.id = prev.id + 1

	g.lmu.Lock()
	defer g.lmu.Unlock()
	added, err := g.bindNew(next)
	if err != nil {
		next.discardACME(prev)
		var be *bindError
		if errors.As(err, &be) {
			return "", cfg.ErrorAt(be.err.Error(), "listeners", listenerIndex(cfg, be.address), "address")
		}
		return "", err
	}
	if err := next.resolveNew(context.Background()); err != nil {
		for _, b := range added {
			b.close()
			delete(g.bound, b.key)
		}
		next.discardACME(prev)
		return "", err
	}
	adm, err := g.bindAdmin(cfg)
	if err != nil {
		for _, b := range added {
			b.close()
			delete(g.bound, b.key)
		}
		next.discardACME(prev)
		return "", err
	}
	next.setHTTPSPort(g.boundAddr)

	// Nothing fails from here on: the new generation goes in service.
	before := inService(prev)
	g.gen.Store(next)
	for _, set := range next.upstreams {
		if err := set.commit(); err != nil {
			// The file was validated with the same rules: not expected.
			g.errorf("reload: upstream %s: %v", set.name, err)
		}
	}
	for name, set := range prev.upstreams {
		was := next.upstreams[name]
		if was == nil {
			set.retire()
		}
		if was == nil || was.clients != set.clients {
			set.clients.closeIdle()
		}
	}
	g.relay.SetIdle(next.timeouts.idle)
	settings := serverSettingsOf(next)
	for key, b := range g.bound {
		li := next.listeners[key]
		if li == nil {
			// Removed: no new connections; live tunnels carry on, and
			// the requests in flight finish.
			b.close()
			g.retireServer(b)
			delete(g.bound, key)
			continue
		}
		b.info.Store(li)
		if b.server != nil && b.settings != settings {
			g.retireServer(b)
			g.startServer(b, next)
		}
	}
	for _, b := range added {
		b.info.Store(next.listeners[b.key])
		g.serve(b, next)
	}
	g.switchAdmin(adm, cfg.Admin.Address)
	g.switchLogs(cfg)
	prev.stop()
	next.start(g)
	for _, m := range prev.acme {
		if !next.hasACME(m) {
			m.Close()
		}
	}
	g.scheduleLeaving(leavingOf(before, prev, next), next.timeouts.drain)
	return describeChange(prev.cfg, next.cfg), nil
}

// bindError is an address of the configuration that cannot be bound.
type bindError struct {
	address string
	err     error
}

func (e *bindError) Error() string { return "listen " + e.address + ": " + e.err.Error() }
func (e *bindError) Unwrap() error { return e.err }

func listenerIndex(cfg *config.Config, address string) int {
	for i, l := range cfg.Listeners {
		if l.Address == address {
			return i
		}
	}
	return 0
}

// inService lists the servers of gen's pools now.
func inService(gen *generation) map[*upstream.Server]bool {
	servers := map[*upstream.Server]bool{}
	for _, set := range gen.upstreams {
		for _, s := range set.pool.Servers() {
			servers[s] = true
		}
	}
	return servers
}

// leaving is what a reload took out of service: the servers that left
// their pools and the routes that are gone. The tunnels placed on them
// are ended at timeouts.drain after the reload, unless a later reload
// brought them back.
type leaving struct {
	servers map[*upstream.Server]bool
	routes  map[routeKey]bool
}

// routeKey names a route across generations.
type routeKey struct{ host, path, upstream string }

func keyOf(rt *Route) routeKey { return routeKey{rt.Host, rt.Path, rt.set.name} }

func leavingOf(before map[*upstream.Server]bool, prev, next *generation) leaving {
	l := leaving{servers: map[*upstream.Server]bool{}, routes: map[routeKey]bool{}}
	for s := range before {
		if s.Removed() {
			l.servers[s] = true
		}
	}
	kept := next.routeKeys()
	for k := range prev.routeKeys() {
		if !kept[k] {
			l.routes[k] = true
		}
	}
	return l
}

func (gen *generation) routeKeys() map[routeKey]bool {
	keys := map[routeKey]bool{}
	for _, rt := range gen.router.routes() {
		keys[keyOf(rt)] = true
	}
	return keys
}

// scheduleLeaving ends, after drain, the live tunnels placed on what l
// took out of service and is still out then: Close 1001 both ways at a
// frame boundary, as the drain of a shutdown does, logged closed_by=reload.
// Tunnels to servers and routes in service are never touched.
func (g *Gateway) scheduleLeaving(l leaving, drain time.Duration) {
	if len(l.servers) == 0 && len(l.routes) == 0 {
		return
	}
	var t *time.Timer
	g.leavingMu.Lock()
	defer g.leavingMu.Unlock()
	t = time.AfterFunc(drain, func() {
		g.leavingMu.Lock()
		delete(g.leaving, t)
		g.leavingMu.Unlock()
		g.endLeaving(l)
	})
	g.leaving[t] = struct{}{}
}

// endLeaving ends the tunnels placed on what l took out of service and is
// still out of service now.
func (g *Gateway) endLeaving(l leaving) {
	current := g.gen.Load().routeKeys()
	var ending []liveTunnel
	g.mu.Lock()
	for t := range g.tunnels.All {
		p := t.placement()
		if l.servers[p.server] && p.server.Removed() || l.routes[keyOf(p.route)] && !current[keyOf(p.route)] {
			ending = append(ending, t)
		}
	}
	g.mu.Unlock()
	for _, t := range ending {
		t.abort(ClosedReload)
	}
}

// describeChange says what a reload changed, for its log line and answer.
func describeChange(prev, next *config.Config) string {
	routes := func(c *config.Config) map[string]bool {
		m := map[string]bool{}
		for _, r := range c.Routes {
			m[r.Host+r.Path+" -> "+r.Upstream] = true
		}
		return m
	}
	pools := func(c *config.Config) map[string]bool {
		m := map[string]bool{}
		for name := range c.Upstreams {
			m[name] = true
		}
		return m
	}
	servers := func(c *config.Config) map[string]bool {
		m := map[string]bool{}
		for name, u := range c.Upstreams {
			for _, s := range u.Servers {
				m[name+"/"+s.Address+s.SRV] = true
			}
		}
		return m
	}
	listeners := func(c *config.Config) map[string]bool {
		m := map[string]bool{}
		for _, l := range c.Listeners {
			m[l.Address] = true
		}
		return m
	}
	var b strings.Builder
	for i, part := range []struct {
		name string
		of   func(*config.Config) map[string]bool
	}{{"routes", routes}, {"pools", pools}, {"servers", servers}, {"listeners", listeners}} {
		if i > 0 {
			b.WriteString(", ")
		}
		added, removed := diffKeys(part.of(prev), part.of(next))
		fmt.Fprintf(&b, "%s +%d -%d", part.name, added, removed)
	}
	return b.String()
}

func diffKeys(prev, next map[string]bool) (added, removed int) {
	for k := range next {
		if !prev[k] {
			added++
		}
	}
	for k := range prev {
		if !next[k] {
			removed++
		}
	}
	return added, removed
}
