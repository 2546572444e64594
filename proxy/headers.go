package proxy

import (
	"bytes"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/tlsterm"
)

// hopByHop are the headers that describe one connection, not the message
// (RFC 9110 section 7.6.1 plus the legacy ones nginx and Go's ReverseProxy
// also drop). Names listed in a Connection header are hop-by-hop too.
var hopByHop = [][]byte{
	[]byte("Connection"),
	[]byte("Keep-Alive"),
	[]byte("Proxy-Connection"),
	[]byte("Proxy-Authenticate"),
	[]byte("Proxy-Authorization"),
	[]byte("TE"),
	[]byte("Trailer"),
	[]byte("Transfer-Encoding"),
	[]byte("Upgrade"),
}

// forwardedNames are set by the gateway; copies sent by the client are
// replaced, except X-Forwarded-For, which the gateway appends to.
var forwardedNames = [][]byte{
	[]byte("X-Forwarded-For"),
	[]byte("X-Forwarded-Proto"),
	[]byte("X-Forwarded-Host"),
	[]byte("X-Real-IP"),
}

func isOneOf(name []byte, list [][]byte) bool {
	for _, n := range list {
		if bytes.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// connectionTokens collects the header names a Connection header value
// lists, so they can be dropped as hop-by-hop.
func connectionTokens(dst [][]byte, v []byte) [][]byte {
	for item := range bytes.SplitSeq(v, []byte(",")) {
		if item = bytes.Trim(item, " \t"); len(item) > 0 {
			dst = append(dst, item)
		}
	}
	return dst
}

// forwarded holds the values the gateway adds to a request it forwards.
type forwarded struct {
	clientIP string // the peer address of the client connection
	proto    string // "http" or "https"
	host     string // the Host the client asked for
	priorXFF []byte // X-Forwarded-For the client sent, if any
	// certHeaders are removed from every request, whatever the listener
	// and the spelling: only the gateway may say who the client is, and
	// routes are not tied to listeners, so a name one mTLS listener sets
	// must not come from a client through another. certSubject, the
	// verified client certificate's subject, is then sent under
	// certHeader, this listener's name.
	certHeaders certHeaderNames
	certHeader  []byte
	certSubject string
}

func newForwarded(ctx *fasthttp.RequestCtx, li *listenerInfo, certHeaders certHeaderNames) forwarded {
	clientIP, _ := clientAddress(ctx)
	f := newPlainForwarded(&ctx.Request.Header, clientIP, string(ctx.Host()), li, certHeaders)
	if ctx.IsTLS() {
		f.proto = "https"
		if li.clientCerts {
			f.certSubject = headerSafe(tlsterm.ClientSubject(ctx.TLSConnectionState()))
		}
	}
	return f
}

// newPlainForwarded is what a request with head h that came over plain
// HTTP from clientIP, asking for host, tells the upstream.
func newPlainForwarded(h *fasthttp.RequestHeader, clientIP, host string, li *listenerInfo, certHeaders certHeaderNames) forwarded {
	f := forwarded{clientIP: clientIP, proto: "http", host: host,
		certHeaders: certHeaders, certHeader: li.clientCertHeader}
	// Header names keep the client's spelling and fasthttp's Peek compares
	// them byte for byte, so "x-forwarded-for" must be looked for by hand,
	// in the head as received (walking it allocates nothing; fasthttp's
	// iterator does). Repeated fields are one list (RFC 9110 section 5.3),
	// joined in order.
	forEachRawHeader(h.RawHeaders(), func(name, value, _ []byte) {
		if !bytes.EqualFold(name, []byte("X-Forwarded-For")) || len(value) == 0 {
			return
		}
		if len(f.priorXFF) > 0 {
			f.priorXFF = append(f.priorXFF, ", "...)
		}
		f.priorXFF = append(f.priorXFF, value...)
	})
	return f
}

func (f forwarded) xff() string {
	if len(f.priorXFF) > 0 {
		return string(f.priorXFF) + ", " + f.clientIP
	}
	return f.clientIP
}

func remoteIP(a net.Addr) string {
	if tcp, ok := a.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// appendUpgradeRequestHead writes the head of a WebSocket handshake to
// forward upstream: the request line, then the client's headers in their
// original order and spelling (from the raw head fasthttp kept), minus the
// hop-by-hop ones, with "Connection: Upgrade" and the client's Upgrade line
// kept, then the X-Forwarded-* headers. The head must have passed
// checkClientHandshake: its lines are then the fields fasthttp parsed,
// one each, so the backend reads them as the gateway did.
//
// A target in absolute form is sent in origin form, with the host the
// route was chosen by (f.host) as Host, so the backend is asked for what
// the gateway routed.
func appendUpgradeRequestHead(dst []byte, h *fasthttp.RequestHeader, f forwarded) []byte {
	target, absolute, _ := originForm(h.RequestURI())
	raw := h.RawHeaders()
	// One allocation for the head: the client's, its forwarding fields
	// and a few hundred bytes of change fit.
	dst = slices.Grow(dst, len(target)+len(raw)+len(f.host)+len(f.priorXFF)+len(f.certSubject)+384)
	dst = append(dst, "GET "...)
	dst = append(dst, target...)
	dst = append(dst, " HTTP/1.1\r\n"...)

	var room [4][]byte // the usual Connection lists fit without allocating
	dropped := room[:0]
	forEachRawHeader(raw, func(name, value, _ []byte) {
		if bytes.EqualFold(name, []byte("Connection")) {
			dropped = connectionTokens(dropped, value)
		}
	})
	wroteConnection := false
	forEachRawHeader(raw, func(name, _, line []byte) {
		switch {
		case bytes.EqualFold(name, []byte("Connection")):
			if !wroteConnection {
				dst = append(dst, "Connection: Upgrade\r\n"...)
				wroteConnection = true
			}
		case bytes.EqualFold(name, []byte("Upgrade")):
			dst = append(dst, line...)
			dst = append(dst, "\r\n"...)
		case absolute && bytes.EqualFold(name, []byte("Host")):
			dst = append(dst, name...)
			dst = append(dst, ": "...)
			dst = append(dst, f.host...)
			dst = append(dst, "\r\n"...)
		case isOneOf(name, hopByHop), isOneOf(name, forwardedNames), f.certHeaders.has(name),
			isOneOf(name, dropped) && !handshakeField(name):
		default:
			dst = append(dst, line...)
			dst = append(dst, "\r\n"...)
		}
	})
	return append(appendForwarded(dst, f), "\r\n"...)
}

// forEachRawHeader calls fn for every header line of a raw head block
// (without its line ending), with the header's name and trimmed value.
func forEachRawHeader(raw []byte, fn func(name, value, line []byte)) {
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue // the blank line ending the head
		}
		fn(bytes.TrimRight(line[:colon], " \t"), bytes.Trim(line[colon+1:], " \t"), line)
	}
}

// handshakeField reports whether name is a header a WebSocket handshake
// is read by, which a Connection header cannot make hop-by-hop: Host (the
// route was chosen by it), Origin (the backend's cross-site check), Cookie
// (sessions, the sticky cookie) and Sec-WebSocket-* (the key, version,
// subprotocols and extensions its 101 must answer). RFC 9110 section
// 7.6.1 forbids listing such end-to-end fields as connection options;
// dropping them would change what the backend is asked.
func handshakeField(name []byte) bool {
	const prefix = "Sec-WebSocket-"
	return bytes.EqualFold(name, []byte("Host")) || bytes.EqualFold(name, []byte("Origin")) ||
		bytes.EqualFold(name, []byte("Cookie")) ||
		len(name) > len(prefix) && bytes.EqualFold(name[:len(prefix)], []byte(prefix))
}

// originForm returns the request target to send upstream in place of the
// client's, and whether the client's was in absolute form. fasthttp reads
// a target that holds "://" and no '/' before its first "//" as absolute
// form and takes its host, not Host, for ctx.Host(), which the route is
// chosen by (RFC 9112 section 3.2.2); this splits it the same way
// (URI.parse and splitHostURI in fasthttp's uri.go) and keeps what follows
// the authority. ok is false for a target that has no origin form: "*",
// and a path beginning with "//" that holds "://", which fasthttp would
// read as a URI of an empty scheme.
func originForm(target []byte) (origin []byte, absolute, ok bool) {
	if !bytes.Contains(target, []byte("://")) {
		return target, false, len(target) > 0 && target[0] == '/'
	}
	n := bytes.Index(target, []byte("//"))
	if n > 0 && bytes.IndexByte(target[:n], '/') >= 0 {
		return target, false, target[0] == '/'
	}
	if n == 0 {
		return nil, false, false
	}
	rest := target[n+2:]
	i := bytes.IndexAny(rest, "/?#")
	switch {
	case i < 0:
		return []byte("/"), true, true
	case rest[i] == '/':
		return rest[i:], true, true
	}
	return append([]byte("/"), rest[i:]...), true, true
}

// headerLineProblem says what in a raw block of header lines (up to the
// blank line ending a head) a recipient may read otherwise than fasthttp
// did, or "" if nothing. The gateway forwards the lines as they came, so
// they must be the fields it parsed and checked:
//   - a blank line before the last, which ends the head early for readers
//     that take a bare LF for a line end;
//   - an obs-fold line (one that begins with a space or tab, RFC 9112
//     section 5.2) is joined to the field above by fasthttp, but read as a
//     field of its own by servers that do not unfold, so " X-Forwarded-For:
//     6.6.6.6" would reach them ahead of the gateway's own;
//   - a name that is not a token (RFC 9110 section 5.6.2), such as
//     "X Forwarded-For" or "Transfer Encoding", which fasthttp keeps as a
//     name of its own but other servers cut at the space or read with a
//     dash in its place;
//   - a control character other than a tab in a value (RFC 9110 section
//     5.5): a lone CR ends the line for some readers. fasthttp refuses
//     these in a request; an upstream's 101 is checked here only.
func headerLineProblem(raw []byte) string {
	for len(raw) > 0 {
		var line []byte
		line, raw, _ = bytes.Cut(raw, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			if len(raw) > 0 {
				// A bare LF ended a line: the head ends here for
				// readers that accept one, later for the gateway's.
				return "a blank line inside the head"
			}
			return "" // the blank line ending the head
		}
		if line[0] == ' ' || line[0] == '\t' {
			return "a header line folded onto the one above (obs-fold)"
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found || !isToken(name) {
			return "an invalid header name " + strconv.Quote(string(name))
		}
		if bytes.ContainsFunc(value, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			return "a control character in header " + strconv.Quote(string(name))
		}
	}
	return ""
}

// isToken reports whether s is an RFC 9110 token (section 5.6.2), as a
// header name must be.
func isToken(s []byte) bool {
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return len(s) > 0
}

// appendHTTPRequestHead writes the head of a plain HTTP request to
// forward upstream, from the client's head as received (fasthttp's parsed
// header re-encodes cookies, lowercases Host, normalizes the target and
// adds Content-Type or Content-Length the client did not send):
//   - the request line with the client's method and target; an
//     absolute-form target becomes origin-form (its scheme, authority and
//     any userinfo go: credentials travel in Authorization, never in a
//     URI),
//   - every header line as spelled and in order, minus the hop-by-hop
//     ones (and those a Connection header lists, but never Host or
//     Content-Length: routing and framing are not the client's to
//     remove), the client's X-Forwarded-* and certificate headers,
//   - Host: the client's line as spelled; for an absolute-form target the
//     host the request was routed by instead (the target's: RFC 9112
//     section 3.2.2 has it win over the Host header); and when the
//     client sent none (HTTP/1.0), serverHost, the upstream server's
//     address, as nginx's default $proxy_host,
//   - the body's framing: the client's Content-Length as sent, or
//     Transfer-Encoding: chunked for a chunked body (the gateway frames
//     it again),
//   - TE: trailers when the client accepts trailers (they are relayed),
//   - X-Forwarded-For, -Proto, -Host, X-Real-IP, and the verified
//     client-certificate subject on an mTLS listener.
//
// It reports whether the client asked to close its connection after this
// request.
func appendHTTPRequestHead(dst []byte, h *fasthttp.RequestHeader, f forwarded, serverHost string) (head []byte, clientClose bool) {
	target, absolute, ok := originForm(h.RequestURI())
	if !ok {
		target = h.RequestURI() // "*" (OPTIONS *) goes as it is
	}
	var authority []byte // the routed host, in place of Host, for an absolute-form target
	if absolute {
		authority = []byte(f.host)
	}
	dst = append(dst, h.Method()...)
	dst = append(dst, ' ')
	dst = append(dst, target...)
	dst = append(dst, " HTTP/1.1\r\n"...)

	raw := h.RawHeaders()
	var tokens [][]byte
	forEachRawHeader(raw, func(name, value, _ []byte) {
		if bytes.EqualFold(name, []byte("Connection")) {
			tokens = connectionTokens(tokens, value)
		}
	})
	chunked := h.ContentLength() == -1
	sawHost := false
	forEachRawHeader(raw, func(name, _, line []byte) {
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			if authority != nil {
				if !sawHost { // in the place of the client's line
					dst = append(append(append(dst, "Host: "...), authority...), "\r\n"...)
				}
				sawHost = true
				return
			}
			sawHost = true
		case bytes.EqualFold(name, []byte("Content-Length")):
			if chunked {
				return // Transfer-Encoding wins (RFC 9112 section 6.3)
			}
		case isOneOf(name, hopByHop), isOneOf(name, tokens), isOneOf(name, forwardedNames), f.certHeaders.has(name):
			return
		}
		dst = append(dst, line...)
		dst = append(dst, "\r\n"...)
	})
	switch {
	case sawHost:
	case authority != nil:
		dst = append(append(append(dst, "Host: "...), authority...), "\r\n"...)
	case serverHost != "":
		dst = append(append(append(dst, "Host: "...), serverHost...), "\r\n"...)
	}
	if chunked {
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	if acceptsTrailers(h) {
		// TE is hop-by-hop, but the gateway relays trailers to this
		// client, so it accepts them from the upstream in its name.
		dst = append(dst, "TE: trailers\r\n"...)
	}
	dst = appendForwarded(dst, f)
	// RFC 9112 section 9.6 makes "close" a case-insensitive token of a
	// list ("close, X-Hop", "Close").
	return append(dst, "\r\n"...), isOneOf([]byte("close"), tokens)
}

// appendForwarded writes the header lines the gateway adds to every
// request it forwards.
func appendForwarded(dst []byte, f forwarded) []byte {
	dst = append(dst, "X-Forwarded-For: "...)
	dst = append(dst, f.xff()...)
	dst = append(dst, "\r\nX-Forwarded-Proto: "...)
	dst = append(dst, f.proto...)
	dst = append(dst, "\r\n"...)
	if f.host != "" { // an HTTP/1.0 request may have no Host
		dst = append(dst, "X-Forwarded-Host: "...)
		dst = append(dst, f.host...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "X-Real-IP: "...)
	dst = append(dst, f.clientIP...)
	dst = append(dst, "\r\n"...)
	if f.certSubject != "" {
		dst = append(dst, f.certHeader...)
		dst = append(dst, ": "...)
		dst = append(dst, f.certSubject...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// certHeaderNames are the names of the client-certificate headers, in
// the form has compares: ASCII lower case, '_' as '-'.
type certHeaderNames [][]byte

// newCertHeaderNames folds names for has, once each.
func newCertHeaderNames(names ...string) certHeaderNames {
	var c certHeaderNames
	for _, n := range names {
		folded := []byte(n)
		for i, b := range folded {
			folded[i] = foldHeaderByte(b)
		}
		if !c.has(folded) {
			c = append(c, folded)
		}
	}
	return c
}

// has reports whether name is one of c in any case, with '_' for any
// '-': CGI, WSGI and PHP read X_Client_DN and X-Client-DN as the same
// variable (HTTP_X_CLIENT_DN), so a backend behind them would take a
// forged underscore copy for the gateway's header.
func (c certHeaderNames) has(name []byte) bool {
	for _, n := range c {
		if equalFolded(name, n) {
			return true
		}
	}
	return false
}

// equalFolded reports whether name, folded, is folded.
func equalFolded(name, folded []byte) bool {
	if len(name) != len(folded) {
		return false
	}
	for i, b := range name {
		if foldHeaderByte(b) != folded[i] {
			return false
		}
	}
	return true
}

// foldHeaderByte is one byte of a header name as certHeaderNames keeps it.
func foldHeaderByte(b byte) byte {
	switch {
	case 'A' <= b && b <= 'Z':
		return b + 'a' - 'A'
	case b == '_':
		return '-'
	}
	return b
}

// headerSafe replaces control characters, which a certificate's subject
// may hold but a header value must not (a CR LF would split the head).
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// cleanHTTPResponse removes hop-by-hop headers from an upstream response
// before it is relayed to the client: the standard ones and those its
// Connection headers list. Transfer-Encoding is left to fasthttp, which
// frames the relayed body itself.
//
// The gateway reads answers with names as received, and then fasthttp's
// Del compares names byte for byte: Del("Keep-Alive") leaves a
// "keep-alive" line in place, so names are matched case-insensitively
// here and deleted as spelled. One pass over the headers usually does: a
// second is made only when a Connection header lists a name that is not
// a standard hop-by-hop one (fasthttp's iterators allocate, and this runs
// on every response).
func cleanHTTPResponse(h *fasthttp.ResponseHeader) {
	drop := func(name []byte) bool {
		return isOneOf(name, hopByHop) && !bytes.EqualFold(name, []byte("Transfer-Encoding"))
	}
	var tokens, doomed [][]byte
	for k, v := range h.All() {
		if bytes.EqualFold(k, []byte("Connection")) {
			tokens = connectionTokens(tokens, bytes.Clone(v))
		}
		if drop(k) {
			doomed = append(doomed, bytes.Clone(k))
		}
	}
	if slices.ContainsFunc(tokens, func(t []byte) bool { return !isOneOf(t, hopByHop) }) {
		for k := range h.All() {
			if isOneOf(k, tokens) && !drop(k) && !bytes.EqualFold(k, []byte("Transfer-Encoding")) {
				doomed = append(doomed, bytes.Clone(k))
			}
		}
	}
	// Deleting while iterating is undefined in fasthttp; hence the list.
	for _, k := range doomed {
		h.DelBytes(k)
	}
}
