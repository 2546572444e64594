// Package config holds wsgate's YAML schema as plain Go types, its defaults
// and its validation. Errors name the file, line and key they are about.
package config

import (
	"fmt"
	"strings"
	"time"
)

// Config is one whole wsgate configuration file.
type Config struct {
	Listeners []Listener           `yaml:"listeners"`
	Routes    []Route              `yaml:"routes"`
	Upstreams map[string]*Upstream `yaml:"upstreams"`
	Timeouts  Timeouts             `yaml:"timeouts"`
	Limits    Limits               `yaml:"limits"`
	Admin     Admin                `yaml:"admin"`
	// Resolver is the DNS server (host:port) for upstream names; empty
	// means the system's resolver.
	Resolver string `yaml:"resolver"`
	// AccessLog is where the line of each request and tunnel goes, and in
	// what form; default stdout, text.
	AccessLog Log `yaml:"access_log"`
	// ErrorLog is where errors and lifecycle messages go; default stderr,
	// text.
	ErrorLog Log `yaml:"error_log"`

	// File is the path the configuration was read from ("" when built in code).
	File string `yaml:"-"`
	// Warnings are things that work but will not for long (a certificate
	// about to expire); Parse and Validate fill it, callers print it.
	Warnings []Problem `yaml:"-"`

	// src is the tree the file was decoded from, for ErrorAt; nil when
	// built in Go.
	src *source
}

// Listener is one address the gateway accepts connections on.
type Listener struct {
	Address string `yaml:"address"`
	// TLS, when set, makes the listener speak TLS (wss://, https://).
	TLS *TLS `yaml:"tls"`
	// RedirectHTTPS, on a plain listener, answers every request with a 308
	// to the same URL on https (upgrades get a 400 that says to use wss).
	RedirectHTTPS bool `yaml:"redirect_https"`
}

// TLS configures TLS termination on a listener.
type TLS struct {
	// Certificates are chosen by the SNI name a client asks for, matched
	// against each certificate's DNS names (exact, then wildcard); the
	// first one is the default for clients that send no name or an
	// unknown one.
	Certificates []Certificate `yaml:"certificates"`
	// MinVersion is the oldest TLS version accepted: "1.2" (the default)
	// or "1.3".
	MinVersion string `yaml:"min_version"`
	// ClientCAFile, when set, asks clients for a certificate signed by one
	// of the PEM certificates in this file (mutual TLS).
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth is "require" (the default with client_ca_file: no valid
	// certificate, no handshake) or "verify_if_given" (a certificate is
	// optional, but verified when sent).
	ClientAuth string `yaml:"client_auth"`
	// ClientCertHeader carries the verified client certificate's subject
	// to the upstream; a copy sent by the client is always removed.
	// Default X-Client-Cert-Subject.
	ClientCertHeader string `yaml:"client_cert_header"`
	// ACME, when set, obtains and renews certificates automatically.
	ACME *ACME `yaml:"acme"`
}

// The values of TLS.ClientAuth.
const (
	ClientAuthRequire       = "require"
	ClientAuthVerifyIfGiven = "verify_if_given"
)

// ACME obtains certificates from an ACME CA (Let's Encrypt by default)
// for the listed domains, as Caddy does, answering the TLS-ALPN-01
// challenge on the TLS listener and HTTP-01 on plain listeners.
type ACME struct {
	// Email is the account's contact address (the CA's expiry notices).
	Email string `yaml:"email"`
	// DirectoryURL is the CA's ACME directory; default Let's Encrypt's
	// production directory.
	DirectoryURL string `yaml:"directory_url"`
	// CAFile, when set, is the PEM root the directory's own HTTPS
	// certificate is checked against (a private ACME CA, pebble in tests).
	CAFile string `yaml:"ca_file"`
	// Domains are the names certificates are obtained for; a handshake
	// for any other name gets the listener's certificates.
	Domains []string `yaml:"domains"`
	// StorageDir keeps the account key and the certificates across
	// restarts; default "acme" (relative to the working directory).
	StorageDir string `yaml:"storage_dir"`
}

// UpstreamTLS makes the gateway speak TLS to an upstream's servers
// (wss:// and https:// backends).
type UpstreamTLS struct {
	// Enabled turns TLS to the servers on.
	Enabled bool `yaml:"enabled"`
	// CAFile is the PEM roots the servers' certificates are checked
	// against; default the system's roots.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name sent in SNI and checked in the server's
	// certificate; default the host of the server's address.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any server certificate (testing only).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// CertFile and KeyFile are the gateway's client certificate, for
	// servers that require mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Certificate is one PEM certificate chain and its private key.
type Certificate struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Route sends requests for a host and path prefix to an upstream.
type Route struct {
	// Host is an exact name, "*.suffix" for any subdomain of suffix, or
	// empty for any host.
	Host string `yaml:"host"`
	// Path is a prefix of the request path; the longest match wins.
	// Empty means "/".
	Path string `yaml:"path"`
	// Upstream names an entry of Config.Upstreams.
	Upstream string `yaml:"upstream"`
	// Tunnel is how upgraded connections of this route are carried:
	// "websocket" (the default) follows WebSocket frames, so the gateway
	// can act between them (Close 1001 on drain); "raw" copies bytes
	// without looking, for other upgrade protocols or peers that bend
	// RFC 6455.
	Tunnel string `yaml:"tunnel"`
}

// The values of Route.Tunnel.
const (
	TunnelWebSocket = "websocket"
	TunnelRaw       = "raw"
)

// The kinds of HashKey, what hash_key names before its colon.
const (
	HashKeyIP     = "ip"     // the client's address
	HashKeyHeader = "header" // a request header
	HashKeyCookie = "cookie" // a cookie of the request
	HashKeyQuery  = "query"  // a query parameter
)

// HashKey is a parsed Upstream.HashKey.
type HashKey struct {
	// Kind is HashKeyIP, HashKeyHeader, HashKeyCookie or HashKeyQuery.
	Kind string
	// Name is the header's, cookie's or query parameter's name; "" for
	// HashKeyIP.
	Name string
}

// ParseHashKey parses a hash_key: ip, header:NAME, cookie:NAME or
// query:NAME. Validation and the proxy both read hash_key through it.
func ParseHashKey(s string) (HashKey, error) {
	if s == HashKeyIP {
		return HashKey{Kind: HashKeyIP}, nil
	}
	kind, name, _ := strings.Cut(s, ":")
	switch kind {
	case HashKeyHeader, HashKeyCookie, HashKeyQuery:
		if name != "" {
			return HashKey{Kind: kind, Name: name}, nil
		}
	}
	return HashKey{}, fmt.Errorf("hash_key %q is not ip, header:NAME, cookie:NAME or query:NAME", s)
}

// Upstream is a pool of servers and how to choose among them.
type Upstream struct {
	// Balance is the selection policy: "least_conn" (the default: WebSocket
	// connections live long, and round robin piles them up unevenly),
	// "round_robin" or "hash".
	Balance string `yaml:"balance"`
	// HashKey is what "hash" hashes: "ip" (the default), "header:NAME",
	// "cookie:NAME" or "query:NAME". A request without the key falls back
	// to the client IP.
	HashKey string `yaml:"hash_key"`
	// HashBoundedLoad, with "hash", caps every server at this factor of
	// the mean load (e.g. 1.25); 0 means no cap.
	HashBoundedLoad float64 `yaml:"hash_bounded_load"`
	// StickyCookie names a cookie the gateway inserts to pin a client to
	// the server it first reached (Socket.IO and SockJS need this).
	StickyCookie string `yaml:"sticky_cookie"`
	// Retries bounds how many other servers a new connection (or an
	// idempotent request that sent nothing) is tried on after a failure;
	// default: the number of servers - 1.
	Retries *int `yaml:"retries"`
	// TryTimeout bounds the time spent on those tries; 0 means no bound.
	TryTimeout Duration `yaml:"try_timeout"`
	// MaxFails failures within FailTimeout take a server out for
	// FailTimeout (nginx's max_fails/fail_timeout); default 1 and 10s;
	// max_fails 0 turns passive health off.
	MaxFails    *int     `yaml:"max_fails"`
	FailTimeout Duration `yaml:"fail_timeout"`
	// HealthCheck, when set, probes every server periodically.
	HealthCheck *HealthCheck `yaml:"health_check"`
	// ResolveInterval is how often server names (and SRV records) are
	// resolved again; default 10s.
	ResolveInterval Duration `yaml:"resolve_interval"`
	// TLS, when set, makes the gateway speak TLS to the servers.
	TLS     *UpstreamTLS `yaml:"tls"`
	Servers []Server     `yaml:"servers"`
}

// HealthCheck is an upstream's active health check.
type HealthCheck struct {
	// Path is requested on every server (GET, or a WebSocket handshake).
	Path string `yaml:"path"`
	// Interval between probes (default 5s) and Timeout of one (default 2s).
	Interval Duration `yaml:"interval"`
	Timeout  Duration `yaml:"timeout"`
	// Healthy consecutive passes bring a server back (default 2);
	// Unhealthy consecutive failures take it out (default 3).
	Healthy   int `yaml:"healthy"`
	Unhealthy int `yaml:"unhealthy"`
	// ExpectStatus is the status a passing GET answers; 0 means any 2xx/3xx.
	ExpectStatus int `yaml:"expect_status"`
	// WebSocket probes with a real WebSocket handshake (101 expected).
	WebSocket bool `yaml:"websocket"`
}

// Server is one upstream server, or a DNS name or SRV record standing for
// several.
type Server struct {
	// Address is host:port; the host may be a DNS name, whose every
	// address becomes a server.
	Address string `yaml:"address"`
	// SRV is a DNS SRV name ("_ws._tcp.example.com") used instead of
	// Address; targets, ports and weights come from the records, and
	// records of a higher priority value become backups.
	SRV string `yaml:"srv"`
	// Weight is the server's share under weighted policies; default 1.
	Weight int `yaml:"weight"`
	// MaxConns caps its live tunnels plus in-flight requests; 0: no cap.
	MaxConns int `yaml:"max_conns"`
	// Backup servers take connections only when every primary is down.
	Backup bool `yaml:"backup"`
	// Down takes the server out of service.
	Down bool `yaml:"down"`
}

// Timeouts bound each phase of a connection.
type Timeouts struct {
	// Connect bounds dialing an upstream server. Default 5s.
	Connect Duration `yaml:"connect"`
	// Handshake bounds reading the client's request head and the upstream's
	// response head to a WebSocket handshake. Default 10s.
	Handshake Duration `yaml:"handshake"`
	// Idle closes a tunnel, or a plain HTTP exchange, that moved no byte in
	// either direction for this long. Default 1h.
	Idle Duration `yaml:"idle"`
	// Drain is how long a stopping gateway waits for live tunnels to end
	// before closing them. Default 30s.
	Drain Duration `yaml:"drain"`
}

// Limits bound what one client may send.
type Limits struct {
	// MaxHeaderBytes is the largest request head accepted; larger heads get
	// 431. Default 16384.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// Admin configures the admin listener: plain HTTP with /healthz, /readyz,
// POST /reload and /metrics.
type Admin struct {
	Address string `yaml:"address"`
}

// Log is a log's destination and line format.
type Log struct {
	// Path is "stdout", "stderr" or a file, opened for append and created
	// with mode 0644; a relative path is relative to the working
	// directory. SIGUSR1 opens the file again (after logrotate moved it).
	Path string `yaml:"path"`
	// Format is "text" (wsgate's own lines) or "json" (one JSON object per
	// line).
	Format string `yaml:"format"`
}

// The special values of Log.Path and the values of Log.Format.
const (
	LogStdout = "stdout"
	LogStderr = "stderr"
	LogText   = "text"
	LogJSON   = "json"
)

// Duration is a time.Duration written in YAML as a Go duration string
// such as "5s" or "1h30m".
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
