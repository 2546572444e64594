package proxy

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/wsgate/wsgate/admin"
	"github.com/wsgate/wsgate/config"
)

// refusal is a reload that was not attempted; Status is the admin
// endpoint's answer to it.
type refusal struct {
	msg    string
	status int
}

func (r *refusal) Error() string { return r.msg }

// Status is the HTTP status POST /reload answers with.
func (r *refusal) Status() int { return r.status }

// NotReady lists what keeps the gateway from serving, for GET /readyz: a
// drain under way, a listener not bound, a pool without a usable server.
// It is empty when the gateway is ready.
func (g *Gateway) NotReady() []string {
	if g.draining.Load() {
		return []string{"draining: shutting down"}
	}
	gen := g.gen.Load()
	if gen == nil {
		return []string{"not started"}
	}
	var missing []string
	g.lmu.Lock()
	for _, key := range gen.order {
		if g.bound[key] == nil {
			missing = append(missing, "listener "+gen.listeners[key].address+" is not bound")
		}
	}
	g.lmu.Unlock()
	for _, name := range gen.upstreamNames() {
		if gen.upstreams[name].pool.Usable() == 0 {
			missing = append(missing, "upstream "+name+" has no usable server")
		}
	}
	return missing
}

// AdminAddr is the admin listener's bound address, or nil when
// admin.address is not set.
func (g *Gateway) AdminAddr() net.Addr {
	g.lmu.Lock()
	defer g.lmu.Unlock()
	if g.admin == nil {
		return nil
	}
	return g.admin.Addr()
}

// bindAdmin binds the admin listener of cfg when its address differs from
// the one serving now; it returns the new server, or nil when there is no
// change. g.lmu is held.
func (g *Gateway) bindAdmin(cfg *config.Config) (*admin.Server, error) {
	if cfg.Admin.Address == g.adminAddress {
		return nil, nil
	}
	if cfg.Admin.Address == "" {
		return nil, nil
	}
	s, err := admin.Listen(cfg.Admin.Address, g, g.errorWriter)
	if err != nil {
		return nil, cfg.ErrorAt("listen "+cfg.Admin.Address+": "+err.Error(), "admin", "address")
	}
	return s, nil
}

// switchAdmin puts next in service as the admin listener of address (""
// for none), and closes the one serving until now. Its requests in flight
// (the POST /reload that brought the change, likely) are answered first,
// on a goroutine of their own. g.lmu is held.
func (g *Gateway) switchAdmin(next *admin.Server, address string) {
	if address == g.adminAddress {
		return
	}
	if old := g.admin; old != nil {
		go closeAdmin(old)
	}
	g.admin, g.adminAddress = next, address
}

// adminCloseWait bounds how long a closing admin listener waits for its
// last answers.
const adminCloseWait = 5 * time.Second

func closeAdmin(s *admin.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), adminCloseWait)
	defer cancel()
	s.Close(ctx)
}

var (
	errNoConfigFile = &refusal{msg: "no configuration file to reload: the gateway runs on a built-in configuration", status: http.StatusConflict}
	errDraining     = &refusal{msg: "the gateway is draining: reload refused", status: http.StatusServiceUnavailable}
	errNotStarted   = &refusal{msg: "the gateway has not started: nothing to reload yet", status: http.StatusServiceUnavailable}
)
