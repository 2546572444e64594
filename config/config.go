// Package config holds wsgate's YAML schema as plain Go types, its defaults
// and its validation. Errors name the file, line and key they are about.
package config

import "time"

// Config is one whole wsgate configuration file.
type Config struct {
	Listeners []Listener           `yaml:"listeners"`
	Routes    []Route              `yaml:"routes"`
	Upstreams map[string]*Upstream `yaml:"upstreams"`
	Timeouts  Timeouts             `yaml:"timeouts"`
	Limits    Limits               `yaml:"limits"`
	Admin     Admin                `yaml:"admin"`

	// File is the path the configuration was read from ("" when built in code).
	File string `yaml:"-"`
}

// Listener is one address the gateway accepts connections on.
type Listener struct {
	Address string `yaml:"address"`
	// TLS, when set, makes the listener speak TLS (wss://, https://).
	TLS *TLS `yaml:"tls"`
}

// TLS configures TLS termination on a listener.
type TLS struct {
	// Certificates are offered by SNI; the first one is the default for
	// clients that send no server name.
	Certificates []Certificate `yaml:"certificates"`
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

// Upstream is a pool of servers and how to choose among them.
type Upstream struct {
	// Balance is the selection policy; "round_robin" (the default).
	Balance string `yaml:"balance"`
	// HashKey is the key of the "hash" policy (not supported yet).
	HashKey string `yaml:"hash_key"`
	// StickyCookie names a gateway-inserted cookie (not supported yet).
	StickyCookie string   `yaml:"sticky_cookie"`
	Servers      []Server `yaml:"servers"`
}

// Server is one upstream server.
type Server struct {
	// Address is host:port.
	Address string `yaml:"address"`
	// Weight is the server's share under weighted policies; default 1.
	Weight int `yaml:"weight"`
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

// Admin configures the admin endpoint (metrics, status); unused for now.
type Admin struct {
	Address string `yaml:"address"`
}

// Duration is a time.Duration written in YAML as a Go duration string
// such as "5s" or "1h30m".
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }
