package proxy

import (
	"net"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/acmecert"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/tlsterm"
)

// listenerInfo is one configured listener: its address, and what handling
// a request needs to know about the listener it arrived on.
type listenerInfo struct {
	cfg     config.Listener
	address string              // as configured
	tls     *tlsterm.Terminator // nil on a plain listener
	acme    *acmecert.Manager   // the certificates tls manages, or nil
	// clientCertHeader carries the verified subject, with clientCerts
	// (it is removed from requests on every listener, with the others:
	// generation.certHeaders).
	clientCertHeader []byte
	clientCerts      bool
	// redirectHTTPS answers every request with a redirect to https.
	redirectHTTPS bool
}

// newListenerInfo builds a listener's settings. Its certificates are read
// now, so a reload with a certificate that does not load fails. was is
// the listener of the same address in the generation in service, or nil:
// its ACME manager is carried when the acme block did not change, since a
// manager's renewal timers cannot be stopped.
func (g *Gateway) newListenerInfo(lc config.Listener, handshake time.Duration, was *listenerInfo) (*listenerInfo, error) {
	li := &listenerInfo{cfg: lc, address: lc.Address, redirectHTTPS: lc.RedirectHTTPS}
	if lc.TLS == nil {
		return li, nil
	}
	opts := tlsterm.Options{Logf: g.errorf, HandshakeTimeout: handshake}
	if lc.TLS.ACME != nil {
		if was != nil && was.acme != nil && sameConfig(was.cfg.TLS.ACME, lc.TLS.ACME) {
			li.acme = was.acme
		} else {
			m, err := acmecert.New(lc.TLS.ACME, g.errorWriter)
			if err != nil {
				return nil, err
			}
			li.acme = m
		}
		opts.Managed = li.acme
	}
	term, err := tlsterm.New(lc.TLS, opts)
	if err != nil {
		if li.acme != nil && (was == nil || li.acme != was.acme) {
			li.acme.Close()
		}
		return nil, err
	}
	li.tls = term
	li.clientCertHeader = []byte(lc.TLS.ClientCertHeader)
	li.clientCerts = lc.TLS.ClientCAFile != ""
	return li, nil
}

// clientCertHeaderNames lists the client-certificate header names of
// every listener and the default one, which a client could otherwise send
// through a listener that does not set it.
func clientCertHeaderNames(ls []config.Listener) certHeaderNames {
	names := []string{config.DefaultClientCertHeader}
	for _, l := range ls {
		if l.TLS != nil && l.TLS.ClientCertHeader != "" {
			names = append(names, l.TLS.ClientCertHeader)
		}
	}
	return newCertHeaderNames(names...)
}

// redirectToHTTPS answers a request on a redirect_https listener: 308 to
// the same host, path and query on the first TLS listener's port (308, not
// 301, so a POST stays a POST). A WebSocket upgrade cannot follow a
// redirect (browsers fail the connection), so it gets a 400 that says
// what to use instead. The host is the Host header's and the path and
// query are the target's as sent: an absolute-form target
// ("http://other/x") lends neither its scheme nor its host.
func (g *Gateway) redirectToHTTPS(ctx *fasthttp.RequestCtx, gen *generation) {
	host := string(ctx.Request.Header.Host())
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		g.refuse(ctx, fasthttp.StatusBadRequest, "this listener redirects to https and needs a Host header")
		return
	}
	if strings.Contains(host, ":") { // an IPv6 literal
		host = "[" + host + "]"
	}
	if port := gen.httpsPort; port != "" && port != "443" {
		host += ":" + port
	}
	target := redirectTarget(ctx.URI())
	if isUpgrade(&ctx.Request.Header) {
		g.refuse(ctx, fasthttp.StatusBadRequest, "this listener only redirects to https; connect with wss://"+host+target)
		return
	}
	location := "https://" + host + target
	g.refuse(ctx, fasthttp.StatusPermanentRedirect, "use "+location)
	ctx.Response.Header.Set("Location", location)
}

// redirectTarget returns a request target's path and query as the client
// sent them, unnormalized; "/" when it has no path (an absolute-form
// target without one, or "*").
func redirectTarget(u *fasthttp.URI) string {
	path := u.PathOriginal()
	if len(path) == 0 || path[0] != '/' {
		path = []byte("/")
	}
	if q := u.QueryString(); len(q) > 0 {
		return string(path) + "?" + string(q)
	}
	return string(path)
}

// answerACMEChallenge answers an HTTP-01 challenge for one of the ACME
// managers' names; it reports whether it did.
func (gen *generation) answerACMEChallenge(ctx *fasthttp.RequestCtx) bool {
	for _, m := range gen.acme {
		if m.ServeHTTPChallenge(ctx) {
			return true
		}
	}
	return false
}
