package proxy

import (
	"net"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/acmecert"
	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/tlsterm"
)

// listenerInfo is one configured listener: its address, and what handling
// a request needs to know about the listener it arrived on.
type listenerInfo struct {
	address string              // as configured
	tls     *tlsterm.Terminator // nil on a plain listener
	// clientCertHeader carries the verified subject, with clientCerts
	// (it is removed from requests on every listener, with the others:
	// Gateway.certHeaders).
	clientCertHeader []byte
	clientCerts      bool
	// redirectHTTPS answers every request with a redirect to https.
	redirectHTTPS bool
}

func (g *Gateway) newListenerInfo(lc config.Listener) (*listenerInfo, error) {
	li := &listenerInfo{address: lc.Address, redirectHTTPS: lc.RedirectHTTPS}
	if lc.TLS == nil {
		return li, nil
	}
	opts := tlsterm.Options{Logf: g.errorf, HandshakeTimeout: g.timeouts.handshake}
	if lc.TLS.ACME != nil {
		m, err := acmecert.New(lc.TLS.ACME, g.errorWriter)
		if err != nil {
			return nil, err
		}
		g.acme = append(g.acme, m)
		opts.Managed = m
	}
	term, err := tlsterm.New(lc.TLS, opts)
	if err != nil {
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

// ReloadCertificates reads every TLS listener's certificate files again
// (SIGHUP). Handshakes after it use the new certificates; live connections
// are untouched. A listener whose files do not load keeps the certificates
// it has; the error is logged and returned.
func (g *Gateway) ReloadCertificates() error {
	var first error
	for _, li := range g.listenerInfos {
		if li.tls != nil {
			if err := li.tls.Reload(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// redirectToHTTPS answers a request on a redirect_https listener: 308 to
// the same host, path and query on the first TLS listener's port (308, not
// 301, so a POST stays a POST). A WebSocket upgrade cannot follow a
// redirect (browsers fail the connection), so it gets a 400 that says
// what to use instead. The host is the Host header's and the path and
// query are the target's as sent: an absolute-form target
// ("http://other/x") lends neither its scheme nor its host.
func (g *Gateway) redirectToHTTPS(ctx *fasthttp.RequestCtx) {
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
	if port := g.httpsPort(); port != "" && port != "443" {
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

// httpsPort is the bound port of the first TLS listener.
func (g *Gateway) httpsPort() string {
	for i, li := range g.listenerInfos {
		if li.tls != nil && i < len(g.listeners) {
			if tcp, ok := g.listeners[i].Addr().(*net.TCPAddr); ok {
				return strconv.Itoa(tcp.Port)
			}
		}
	}
	return ""
}

// answerACMEChallenge answers an HTTP-01 challenge for one of the ACME
// managers' names; it reports whether it did.
func (g *Gateway) answerACMEChallenge(ctx *fasthttp.RequestCtx) bool {
	for _, m := range g.acme {
		if m.ServeHTTPChallenge(ctx) {
			return true
		}
	}
	return false
}
