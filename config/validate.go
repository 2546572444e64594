package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/wsgate/wsgate/upstream"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// File is the configuration file ("" for a Config built in Go).
	File string
	// Line is the 1-based line the problem is about, 0 when unknown.
	Line int
	// Key is the key path, such as routes[1].upstream or
	// upstreams.ws_server.servers[0].address; "" when about the whole file.
	Key string
	// Msg says what is wrong.
	Msg string
}

// String formats p as "FILE:LINE: KEY: MSG", leaving out what is unknown.
func (p Problem) String() string {
	var b strings.Builder
	switch {
	case p.File != "" && p.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", p.File, p.Line)
	case p.File != "":
		b.WriteString(p.File + ": ")
	case p.Line > 0:
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error is every problem found in one configuration, in line order.
type Error struct {
	Problems []Problem
}

// Error lists the problems one per line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// newError sorts problems by line so they read top to bottom; the sort is
// stable so problems on one line (or without lines) keep the order they
// were found in.
func newError(problems []Problem) *Error {
	slices.SortStableFunc(problems, func(a, b Problem) int { return a.Line - b.Line })
	return &Error{Problems: problems}
}

// ErrorAt is a problem with the value at a key path (such as "listeners",
// 1, "address") found after the file was loaded, such as an address that
// cannot be bound, named by file, line and key as validation problems
// are.
func (c *Config) ErrorAt(msg string, path ...any) *Error {
	src := c.src
	if src == nil {
		src = &source{file: c.File}
	}
	_, line, _ := src.lookup(path)
	return &Error{Problems: []Problem{{File: src.file, Line: line, Key: keyPath(path).String(), Msg: msg}}}
}

// Validate checks a Config built in Go, after ApplyDefaults, by the same
// rules Parse applies to a file. Its problems carry key paths but no lines.
// The error is nil or an *Error.
func (c *Config) Validate() error {
	v := &validator{src: &source{file: c.File}}
	v.config(c)
	c.Warnings = v.warnings
	if len(v.problems) > 0 {
		return newError(v.problems)
	}
	return nil
}

// validator collects problems, locating each by its key path in src.
type validator struct {
	src      *source
	problems []Problem
	warnings []Problem
}

func (v *validator) add(path keyPath, format string, args ...any) {
	_, line, _ := v.src.lookup(path)
	v.problems = append(v.problems, Problem{
		File: v.src.file, Line: line, Key: path.String(), Msg: fmt.Sprintf(format, args...),
	})
}

// warn records something that works now but needs attention soon.
func (v *validator) warn(path keyPath, format string, args ...any) {
	_, line, _ := v.src.lookup(path)
	v.warnings = append(v.warnings, Problem{
		File: v.src.file, Line: line, Key: path.String(), Msg: fmt.Sprintf(format, args...),
	})
}

// written reports whether path is present in the file.
func (v *validator) written(path keyPath) bool {
	_, _, found := v.src.lookup(path)
	return found
}

// explicitZeros rejects zeros written in the file for keys whose zero means
// "use the default": ApplyDefaults cannot tell them apart, and silently
// turning "idle: 0s" into 1h or "weight: 0" into 1 would surprise.
func (v *validator) explicitZeros(c *Config) {
	t := keyPath{"timeouts"}
	for _, d := range []struct {
		key string
		val Duration
		def Duration
	}{
		{"connect", c.Timeouts.Connect, defaultConnect},
		{"handshake", c.Timeouts.Handshake, defaultHandshake},
		{"idle", c.Timeouts.Idle, defaultIdle},
		{"drain", c.Timeouts.Drain, defaultDrain},
	} {
		if d.val == 0 && v.written(t.key(d.key)) {
			v.add(t.key(d.key), "must be more than 0 (leave the key out for the default %s)", d.def.Std())
		}
	}
	if p := (keyPath{"limits", "max_header_bytes"}); c.Limits.MaxHeaderBytes == 0 && v.written(p) {
		v.add(p, "must be between %d and %d (leave the key out for the default %d)",
			minHeaderBytes, maxHeaderBytes, defaultMaxHeaderBytes)
	}
	for name, u := range c.Upstreams {
		if u == nil {
			continue
		}
		up := keyPath{"upstreams", name}
		for _, d := range []struct {
			key string
			val Duration
		}{{"fail_timeout", u.FailTimeout}, {"resolve_interval", u.ResolveInterval}} {
			if d.val == 0 && v.written(up.key(d.key)) {
				v.add(up.key(d.key), "must be more than 0 (leave the key out for the default)")
			}
		}
		if hc := u.HealthCheck; hc != nil {
			for _, d := range []struct {
				key string
				val Duration
			}{{"interval", hc.Interval}, {"timeout", hc.Timeout}} {
				if d.val == 0 && v.written(up.key("health_check").key(d.key)) {
					v.add(up.key("health_check").key(d.key), "must be more than 0 (leave the key out for the default)")
				}
			}
			for _, n := range []struct {
				key string
				val int
			}{{"healthy", hc.Healthy}, {"unhealthy", hc.Unhealthy}} {
				if n.val == 0 && v.written(up.key("health_check").key(n.key)) {
					v.add(up.key("health_check").key(n.key), "must be between 1 and 100 (leave the key out for the default)")
				}
			}
		}
		for i, s := range u.Servers {
			p := keyPath{"upstreams", name, "servers", i, "weight"}
			if s.Weight == 0 && v.written(p) {
				v.add(p, "must be between 1 and %d (leave the key out for the default %d)", maxWeight, defaultWeight)
			}
		}
	}
}

// Bounds checked by validation.
const (
	minHeaderBytes = 1024
	maxHeaderBytes = 1 << 20
	maxWeight      = 1000
)

// config checks c, which has had its defaults applied.
func (v *validator) config(c *Config) {
	v.listeners(c.Listeners)
	v.routes(c)
	v.upstreams(c.Upstreams)
	for name, u := range c.Upstreams {
		if u != nil {
			v.upstreamTLS(keyPath{"upstreams", name, "tls"}, u.TLS)
		}
	}

	t := keyPath{"timeouts"}
	for _, d := range []struct {
		key string
		val Duration
	}{
		{"connect", c.Timeouts.Connect},
		{"handshake", c.Timeouts.Handshake},
		{"idle", c.Timeouts.Idle},
		{"drain", c.Timeouts.Drain},
	} {
		if d.val < 0 {
			v.add(t.key(d.key), "must be more than 0, not %s", d.val.Std())
		}
	}
	if n := c.Limits.MaxHeaderBytes; n != 0 && (n < minHeaderBytes || n > maxHeaderBytes) {
		v.add(keyPath{"limits", "max_header_bytes"}, "must be between %d and %d, not %d", minHeaderBytes, maxHeaderBytes, n)
	}
	if c.Admin.Address != "" {
		if msg := checkHostPort(c.Admin.Address); msg != "" {
			v.add(keyPath{"admin", "address"}, "%s", msg)
		}
	}
	if c.Resolver != "" {
		if msg := checkHostPort(c.Resolver); msg != "" {
			v.add(keyPath{"resolver"}, "%s", msg)
		}
	}
	v.log(keyPath{"access_log"}, c.AccessLog)
	v.log(keyPath{"error_log"}, c.ErrorLog)
}

func (v *validator) listeners(ls []Listener) {
	if len(ls) == 0 {
		v.add(keyPath{"listeners"}, "at least one listener is needed")
		return
	}
	seen := make(map[string]int) // normalized address → index of first use
	for i, l := range ls {
		p := keyPath{"listeners", i}
		if l.Address == "" {
			v.add(p.key("address"), "an address (host:port) is needed")
		} else if msg := checkHostPort(l.Address); msg != "" {
			v.add(p.key("address"), "%s", msg)
		} else {
			key := normalizeHostPort(l.Address)
			if first, dup := seen[key]; dup {
				v.add(p.key("address"), "%q is already used by listeners[%d]", l.Address, first)
			} else {
				seen[key] = i
			}
		}
		v.tls(p.key("tls"), l.TLS)
	}
	v.redirects(ls)
	v.acmeStorage(ls)
}

// readable reports a file name that is empty or names no readable file,
// and returns whether the file can be read. Relative names are resolved
// from the working directory, as the proxy resolves them.
func (v *validator) readable(p keyPath, name string) bool {
	if name == "" {
		v.add(p, "a file name is needed")
		return false
	}
	f, err := os.Open(name)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		v.add(p, "cannot read %q: %v", name, err)
		return false
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		v.add(p, "%q is a directory, not a file", name)
		return false
	}
	return true
}

func (v *validator) routes(c *Config) {
	if len(c.Routes) == 0 {
		v.add(keyPath{"routes"}, "at least one route is needed")
		return
	}
	defined := make([]string, 0, len(c.Upstreams))
	for name := range c.Upstreams {
		defined = append(defined, name)
	}
	slices.Sort(defined)

	type hostPath struct{ host, path string }
	seen := make(map[hostPath]int)
	for i, r := range c.Routes {
		p := keyPath{"routes", i}
		if msg := checkRouteHost(r.Host); msg != "" {
			v.add(p.key("host"), "%s", msg)
		}
		if !strings.HasPrefix(r.Path, "/") {
			v.add(p.key("path"), "%q must begin with \"/\"", r.Path)
		}
		if r.Tunnel != TunnelWebSocket && r.Tunnel != TunnelRaw {
			v.add(p.key("tunnel"), "tunnel %q is not known (known: %s, %s)", r.Tunnel, TunnelWebSocket, TunnelRaw)
		}
		switch _, ok := c.Upstreams[r.Upstream]; {
		case r.Upstream == "":
			v.add(p.key("upstream"), "an upstream is needed (defined: %s)", strings.Join(defined, ", "))
		case !ok:
			v.add(p.key("upstream"), "upstream %q is not defined (defined: %s)", r.Upstream, strings.Join(defined, ", "))
		}
		// Host names are case-insensitive, so Example.com and example.com
		// would be the same route.
		hp := hostPath{strings.ToLower(r.Host), r.Path}
		if first, dup := seen[hp]; dup {
			v.add(p, "host %q path %q is already routed by routes[%d]", r.Host, r.Path, first)
		} else {
			seen[hp] = i
		}
	}
}

// checkRouteHost accepts "", an exact host name, or "*.suffix".
func checkRouteHost(host string) string {
	if host == "" {
		return ""
	}
	name := host
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		name = rest
	}
	if strings.Contains(name, "*") {
		return fmt.Sprintf("%q: a wildcard is only allowed as a whole first label, as in \"*.example.com\"", host)
	}
	if !validHostName(name) {
		return fmt.Sprintf("%q is not a valid host name", host)
	}
	return ""
}

func (v *validator) upstreams(us map[string]*Upstream) {
	names := make([]string, 0, len(us))
	for name := range us {
		names = append(names, name)
	}
	slices.Sort(names) // map order is random; problems must not be
	for _, name := range names {
		u, p := us[name], keyPath{"upstreams", name}
		if name == "" {
			v.add(p, "an upstream needs a non-empty name")
		}
		if u == nil {
			v.add(p, "has no settings; it needs at least servers")
			continue
		}
		if !slices.Contains(upstream.Balancers(), u.Balance) {
			v.add(p.key("balance"), "balance %q is unknown (known: %s)", u.Balance, strings.Join(upstream.Balancers(), ", "))
		}
		if u.HashKey != "" {
			if u.Balance != "hash" {
				v.add(p.key("hash_key"), "hash_key needs balance: hash")
			} else if _, err := ParseHashKey(u.HashKey); err != nil {
				v.add(p.key("hash_key"), "%v", err)
			}
		}
		if u.HashBoundedLoad != 0 {
			if u.Balance != "hash" {
				v.add(p.key("hash_bounded_load"), "hash_bounded_load needs balance: hash")
			} else if u.HashBoundedLoad < 1 || u.HashBoundedLoad > 10 {
				v.add(p.key("hash_bounded_load"), "must be between 1 and 10 (1.25: no server above 1.25 times the mean), not %g", u.HashBoundedLoad)
			}
		}
		if u.StickyCookie != "" && !isToken(u.StickyCookie) {
			v.add(p.key("sticky_cookie"), "%q is not a valid cookie name (letters, digits and !#$%%&'*+-.^_`|~)", u.StickyCookie)
		}
		if u.Retries != nil && (*u.Retries < 0 || *u.Retries > 100) {
			v.add(p.key("retries"), "must be between 0 and 100, not %d", *u.Retries)
		}
		if u.TryTimeout < 0 {
			v.add(p.key("try_timeout"), "must not be negative")
		}
		if u.MaxFails != nil && (*u.MaxFails < 0 || *u.MaxFails > 1000) {
			v.add(p.key("max_fails"), "must be between 0 (off) and 1000, not %d", *u.MaxFails)
		}
		for _, d := range []struct {
			key string
			val Duration
		}{{"fail_timeout", u.FailTimeout}, {"resolve_interval", u.ResolveInterval}} {
			if d.val < 0 {
				v.add(p.key(d.key), "must be more than 0")
			}
		}
		if hc := u.HealthCheck; hc != nil {
			v.healthCheck(p.key("health_check"), hc)
		}
		if len(u.Servers) == 0 {
			v.add(p.key("servers"), "at least one server is needed")
		}
		for i, s := range u.Servers {
			sp := p.key("servers").index(i)
			switch {
			case s.Address != "" && s.SRV != "":
				v.add(sp, "give either address or srv, not both")
			case s.SRV != "":
				if !strings.HasPrefix(s.SRV, "_") || strings.Count(s.SRV, ".") < 2 {
					v.add(sp.key("srv"), "%q is not an SRV name like _ws._tcp.example.com", s.SRV)
				}
			case s.Address == "":
				v.add(sp.key("address"), "an address (host:port) or an srv name is needed")
			default:
				if msg := checkHostPort(s.Address); msg != "" {
					v.add(sp.key("address"), "%s", msg)
				}
			}
			if s.Weight < 0 || s.Weight > maxWeight {
				v.add(sp.key("weight"), "must be between 1 and %d, not %d", maxWeight, s.Weight)
			}
			if s.MaxConns < 0 {
				v.add(sp.key("max_conns"), "must not be negative (0: no limit)")
			}
		}
	}
}

// healthCheck checks an upstream's health_check block.
func (v *validator) healthCheck(p keyPath, hc *HealthCheck) {
	if hc.Path != "" && !strings.HasPrefix(hc.Path, "/") {
		v.add(p.key("path"), "%q must begin with \"/\"", hc.Path)
	}
	for _, d := range []struct {
		key string
		val Duration
	}{{"interval", hc.Interval}, {"timeout", hc.Timeout}} {
		if d.val < 0 {
			v.add(p.key(d.key), "must be more than 0")
		}
	}
	if hc.Interval > 0 && hc.Timeout > hc.Interval {
		v.add(p.key("timeout"), "must not be longer than interval (%s)", hc.Interval.Std())
	}
	for _, n := range []struct {
		key string
		val int
	}{{"healthy", hc.Healthy}, {"unhealthy", hc.Unhealthy}} {
		if n.val < 0 || n.val > 100 {
			v.add(p.key(n.key), "must be between 1 and 100, not %d", n.val)
		}
	}
	if hc.ExpectStatus != 0 && (hc.ExpectStatus < 100 || hc.ExpectStatus > 599) {
		v.add(p.key("expect_status"), "%d is not an HTTP status", hc.ExpectStatus)
	}
	if hc.WebSocket && hc.ExpectStatus != 0 && hc.ExpectStatus != 101 {
		v.add(p.key("expect_status"), "a websocket check expects 101")
	}
}

// isToken reports whether name is an HTTP token (RFC 9110), which header
// names and RFC 6265 cookie names both are.
func isToken(name string) bool {
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return name != ""
}

// checkHostPort accepts host:port with a port of 1-65535 and a host that
// is empty (all interfaces), an IP address or a host name. It returns a
// message, or "" when addr is fine.
func checkHostPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Sprintf("%q is not host:port (%s)", addr, ae.Err)
		}
		return fmt.Sprintf("%q is not host:port", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Sprintf("%q: port %q is not a number from 1 to 65535", addr, port)
	}
	if host == "" {
		return ""
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	if !validHostName(host) {
		return fmt.Sprintf("%q: %q is neither an IP address nor a host name", addr, host)
	}
	return ""
}

// normalizeHostPort makes equal addresses compare equal ("LOCALHOST:080"
// and "localhost:80"). addr must have passed checkHostPort.
func normalizeHostPort(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.ParseUint(port, 10, 16)
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.String()
	}
	return net.JoinHostPort(strings.ToLower(host), strconv.FormatUint(n, 10))
}

// validHostName accepts dot-separated labels of letters, digits, '-' and
// '_' (used by some internal names), with an optional final dot.
func validHostName(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
			if !ok {
				return false
			}
		}
	}
	return true
}
