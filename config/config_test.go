package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadFullConfig(t *testing.T) {
	dir := t.TempDir()
	crt, key := writeCertPair(t, dir, "ws.repo")
	path := writeFile(t, dir, "wsgate.yaml", fmt.Sprintf(`
listeners:
  - address: 127.0.0.1:8080
  - address: :8443
    tls:
      certificates:
        - cert_file: %s
          key_file: %s
routes:
  - host: ws.repo
    path: /
    upstream: ws_server
  - host: "*.example.com"
    path: /chat
    upstream: ws_server
    tunnel: raw
upstreams:
  ws_server:
    balance: round_robin
    servers:
      - address: 127.0.0.1:3000
        weight: 3
      - address: localhost:3001
timeouts:
  connect: 2s
  handshake: 3s
  idle: 90m
  drain: 1m
limits:
  max_header_bytes: 32768
admin:
  address: 127.0.0.1:9090
`, crt, key))

	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.File != path {
		t.Errorf("File = %q, want %q", c.File, path)
	}
	if len(c.Listeners) != 2 || c.Listeners[0].Address != "127.0.0.1:8080" || c.Listeners[0].TLS != nil {
		t.Errorf("Listeners = %+v", c.Listeners)
	}
	if tls := c.Listeners[1].TLS; tls == nil || len(tls.Certificates) != 1 ||
		tls.Certificates[0] != (Certificate{CertFile: crt, KeyFile: key}) {
		t.Errorf("Listeners[1].TLS = %+v", tls)
	}
	wantRoutes := []Route{
		{Host: "ws.repo", Path: "/", Upstream: "ws_server", Tunnel: TunnelWebSocket},
		{Host: "*.example.com", Path: "/chat", Upstream: "ws_server", Tunnel: TunnelRaw},
	}
	if fmt.Sprint(c.Routes) != fmt.Sprint(wantRoutes) {
		t.Errorf("Routes = %+v, want %+v", c.Routes, wantRoutes)
	}
	u := c.Upstreams["ws_server"]
	if u == nil || u.Balance != "round_robin" || len(u.Servers) != 2 {
		t.Fatalf("Upstreams = %+v", c.Upstreams)
	}
	// The second server has no weight: the default 1 applies.
	if u.Servers[0] != (Server{Address: "127.0.0.1:3000", Weight: 3}) || u.Servers[1] != (Server{Address: "localhost:3001", Weight: 1}) {
		t.Errorf("Servers = %+v", u.Servers)
	}
	wantTimeouts := Timeouts{
		Connect:   Duration(2 * time.Second),
		Handshake: Duration(3 * time.Second),
		Idle:      Duration(90 * time.Minute),
		Drain:     Duration(time.Minute),
	}
	if c.Timeouts != wantTimeouts {
		t.Errorf("Timeouts = %+v, want %+v", c.Timeouts, wantTimeouts)
	}
	if c.Limits.MaxHeaderBytes != 32768 || c.Admin.Address != "127.0.0.1:9090" {
		t.Errorf("Limits = %+v, Admin = %+v", c.Limits, c.Admin)
	}
}

func TestLoadAppliesDefaults(t *testing.T) {
	path := writeFile(t, t.TempDir(), "min.yaml", `
listeners:
  - address: :8080
routes:
  - upstream: app
upstreams:
  app:
    servers:
      - address: 10.0.0.1:80
`)
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := c.Routes[0].Path; got != "/" {
		t.Errorf("route path = %q, want /", got)
	}
	if u := c.Upstreams["app"]; u.Balance != "least_conn" || u.Servers[0].Weight != 1 || *u.MaxFails != 1 || u.FailTimeout.Std() != 10*time.Second {
		t.Errorf("upstream = %+v", u)
	}
	want := Timeouts{
		Connect:   Duration(5 * time.Second),
		Handshake: Duration(10 * time.Second),
		Idle:      Duration(time.Hour),
		Drain:     Duration(30 * time.Second),
	}
	if c.Timeouts != want {
		t.Errorf("Timeouts = %+v, want %+v", c.Timeouts, want)
	}
	if c.Limits.MaxHeaderBytes != 16384 {
		t.Errorf("MaxHeaderBytes = %d, want 16384", c.Limits.MaxHeaderBytes)
	}
	if want := (Log{Path: "stdout", Format: "text"}); c.AccessLog != want {
		t.Errorf("AccessLog = %+v, want %+v", c.AccessLog, want)
	}
	if want := (Log{Path: "stderr", Format: "text"}); c.ErrorLog != want {
		t.Errorf("ErrorLog = %+v, want %+v", c.ErrorLog, want)
	}
}

// A log file that does not exist yet is valid when its directory is
// writable, and checking it creates nothing.
func TestLoadLogFiles(t *testing.T) {
	dir := t.TempDir()
	access := filepath.Join(dir, "access.log")
	existing := writeFile(t, dir, "error.log", "")
	c, err := Load(writeFile(t, dir, "logs.yaml", head+"access_log: {path: "+access+", format: json}\nerror_log: {path: "+existing+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessLog != (Log{Path: access, Format: "json"}) || c.ErrorLog != (Log{Path: existing, Format: "text"}) {
		t.Errorf("logs = %+v, %+v", c.AccessLog, c.ErrorLog)
	}
	if _, err := os.Stat(access); err == nil {
		t.Errorf("validation created %s", access)
	}
}

// Valid starts that bad configs below extend. head takes lines 1-8 and
// ends in the upstream's server list; routesLast takes lines 1-7 and ends
// in the route list; afterListener is a valid rest for listeners[0] to go
// before.
const (
	head = `listeners:
  - address: 127.0.0.1:8080
routes:
  - upstream: app
upstreams:
  app:
    servers:
      - address: 127.0.0.1:3000
`
	noServers = `listeners:
  - address: 127.0.0.1:8080
routes:
  - upstream: app
upstreams:
  app:
    servers:
`
	routesLast = `listeners:
  - address: 127.0.0.1:8080
upstreams:
  app:
    servers: [{address: "127.0.0.1:3000"}]
routes:
  - upstream: app
`
	afterListener = `routes: [{upstream: app}]
upstreams: {app: {servers: [{address: "h:1"}]}}
`
)

func TestLoadBadConfigs(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.crt")
	logDir := t.TempDir()
	notDir := filepath.Join(logDir, "plain")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		yaml string
		line int
		key  string // "" for problems about the whole file
		msg  string
	}{
		{"empty file", "", 1, "", "the file is empty"},
		{"only comments", "# nothing yet\n", 1, "", "the file is empty"},
		{"top level is a list", "- listeners\n", 1, "", "top level must be a mapping"},
		{"syntax error", "listeners: [\n", 1, "", "did not find expected node content"},
		{"unknown top-level key", head + "listners: []\n", 9, "listners",
			`key "listners" is not known here (known: listeners, routes, upstreams, timeouts, limits, admin, resolver, access_log, error_log)`},
		{"unknown nested key", head + "timeouts:\n  conect: 5s\n", 10, "timeouts.conect",
			`key "conect" is not known here (known: connect, handshake, idle, drain)`},
		{"unknown key in a list item", "listeners:\n  - address: :80\n    tsl: {}\n" + afterListener, 3,
			"listeners[0].tsl", `key "tsl" is not known here (known: address, tls, redirect_https)`},
		{"bad duration", head + "timeouts:\n  idle: 5 minutes\n", 10, "timeouts.idle", `"5 minutes" is not a duration`},
		{"duration without unit", head + "timeouts:\n  connect: 5\n", 10, "timeouts.connect", `"5" is not a duration`},
		{"bad duration in a flow mapping", head + "timeouts: {connect: 1s, idle: soon}\n", 9, "timeouts.idle", `"soon" is not a duration`},
		{"wrong type", head + "limits:\n  max_header_bytes: lots\n", 10, "limits.max_header_bytes",
			`expected an integer, got a string "lots"`},
		{"duplicate key", head + "admin:\n  address: :1\n  address: :2\n", 11, "admin.address",
			`mapping key "address" already defined at line 10`},
		{"route names a missing upstream", `listeners: [{address: ":80"}]
routes:
  - upstream: app
  - path: /ws
    upstream: ws
upstreams:
  app: {servers: [{address: "h:1"}]}
  api: {servers: [{address: "h:2"}]}
`, 5, "routes[1].upstream", `upstream "ws" is not defined (defined: api, app)`},
		{"route without upstream uses the item's line", routesLast + "  - path: /x\n", 8, "routes[1].upstream", "an upstream is needed"},
		{"empty server list", head + "  other:\n    servers: []\n", 10, "upstreams.other.servers", "at least one server is needed"},
		{"upstream without settings", head + "  other:\n", 9, "upstreams.other", "has no settings"},
		{"no listeners", afterListener, 1, "listeners", "at least one listener"},
		{"no routes", "listeners: [{address: \":80\"}]\nupstreams: {a: {servers: [{address: \"h:1\"}]}}\n", 1, "routes", "at least one route"},
		{"listener address without port", "listeners:\n  - address: 127.0.0.1\n" + afterListener, 2, "listeners[0].address",
			`"127.0.0.1" is not host:port (missing port in address)`},
		{"listener port out of range", "listeners:\n  - address: :70000\n" + afterListener, 2, "listeners[0].address",
			`port "70000" is not a number from 1 to 65535`},
		{"listener port zero", "listeners:\n  - address: localhost:0\n" + afterListener, 2, "listeners[0].address",
			`port "0" is not a number`},
		{"listener host not a name", "listeners:\n  - address: a/b:80\n" + afterListener, 2, "listeners[0].address",
			`"a/b" is neither an IP address nor a host name`},
		{"duplicate listener", "listeners:\n  - address: 127.0.0.1:8080\n  - address: 127.0.0.1:08080\n" + afterListener, 3,
			"listeners[1].address", `"127.0.0.1:08080" is already used by listeners[0]`},
		{"bad server address", head + "      - address: backend\n", 9, "upstreams.app.servers[1].address",
			`"backend" is not host:port (missing port in address)`},
		{"server port not numeric", head + "      - address: backend:http\n", 9, "upstreams.app.servers[1].address",
			`port "http" is not a number`},
		{"negative weight", head + "      - {address: \"h:1\", weight: -1}\n", 9, "upstreams.app.servers[1].weight",
			"must be between 1 and 1000, not -1"},
		{"weight too big", head + "      - address: h:1\n        weight: 1001\n", 10, "upstreams.app.servers[1].weight",
			"must be between 1 and 1000, not 1001"},
		{"explicit zero weight", head + "      - address: h:1\n        weight: 0\n", 10, "upstreams.app.servers[1].weight",
			"leave the key out for the default 1"},
		{"unknown balance", head + "    balance: random\n", 9, "upstreams.app.balance", `balance "random" is unknown (known: least_conn, round_robin, hash)`},
		{"hash_key without hash", head + "    hash_key: ip\n", 9, "upstreams.app.hash_key", "hash_key needs balance: hash"},
		{"bad hash_key", head + "    balance: hash\n    hash_key: body:x\n", 10, "upstreams.app.hash_key", `hash_key "body:x" is not ip, header:NAME, cookie:NAME or query:NAME`},
		{"bounded load below 1", head + "    balance: hash\n    hash_bounded_load: 0.5\n", 10, "upstreams.app.hash_bounded_load", "must be between 1 and 10"},
		{"bad sticky_cookie", head + "    sticky_cookie: \"a b\"\n", 9, "upstreams.app.sticky_cookie", `"a b" is not a valid cookie name`},
		{"negative retries", head + "    retries: -1\n", 9, "upstreams.app.retries", "must be between 0 and 100, not -1"},
		{"zero fail_timeout", head + "    fail_timeout: 0s\n", 9, "upstreams.app.fail_timeout", "must be more than 0"},
		{"health check path", head + "    health_check: {path: health}\n", 9, "upstreams.app.health_check.path", `"health" must begin with "/"`},
		{"health check timeout", head + "    health_check: {interval: 1s, timeout: 2s}\n", 9, "upstreams.app.health_check.timeout", "must not be longer than interval"},
		{"health check websocket status", head + "    health_check: {websocket: true, expect_status: 200}\n", 9, "upstreams.app.health_check.expect_status", "a websocket check expects 101"},
		{"address and srv", head + "        srv: _ws._tcp.x.test\n", 8, "upstreams.app.servers[0]", "give either address or srv, not both"},
		{"bad srv", noServers + "      - srv: ws.x.test\n", 8, "upstreams.app.servers[0].srv", "is not an SRV name"},
		{"negative max_conns", head + "        max_conns: -1\n", 9, "upstreams.app.servers[0].max_conns", "must not be negative"},
		{"bad resolver", head + "resolver: nowhere\n", 9, "resolver", `"nowhere" is not host:port`},
		{"wildcard inside host", routesLast + "    host: a.*.example.com\n", 8, "routes[0].host",
			`"a.*.example.com": a wildcard is only allowed as a whole first label`},
		{"bare wildcard host", routesLast + "  - host: \"*\"\n    upstream: app\n", 8, "routes[1].host", "a wildcard is only allowed"},
		{"path without slash", routesLast + "  - path: chat\n    upstream: app\n", 8, "routes[1].path", `"chat" must begin with "/"`},
		{"unknown tunnel", routesLast + "  - path: /x\n    upstream: app\n    tunnel: tcp\n", 10, "routes[1].tunnel", `tunnel "tcp" is not known (known: websocket, raw)`},
		{"duplicate route", routesLast + "  - host: WS.repo\n    upstream: app\n  - host: ws.repo\n    path: /\n    upstream: app\n", 10,
			"routes[2]", `host "ws.repo" path "/" is already routed by routes[1]`},
		{"missing tls cert file", "listeners:\n  - address: :443\n    tls:\n      certificates:\n        - cert_file: " + missing +
			"\n          key_file: " + missing + "\n" + afterListener,
			5, "listeners[0].tls.certificates[0].cert_file", "no such file or directory"},
		{"tls without certificates", "listeners:\n  - address: :443\n    tls:\n      certificates: []\n" + afterListener,
			4, "listeners[0].tls.certificates", "at least one certificate"},
		{"empty tls", "listeners:\n  - address: :443\n    tls:\n" + afterListener, 3, "listeners[0].tls", "is empty"},
		{"explicit zero timeout", head + "timeouts:\n  handshake: 0s\n", 10, "timeouts.handshake", "must be more than 0"},
		{"negative timeout", head + "timeouts:\n  drain: -1s\n", 10, "timeouts.drain", "must be more than 0, not -1s"},
		{"max_header_bytes too small", head + "limits:\n  max_header_bytes: 100\n", 10, "limits.max_header_bytes",
			"must be between 1024 and 1048576, not 100"},
		{"bad admin address", head + "admin:\n  address: localhost\n", 10, "admin.address", "is not host:port"},
		{"unknown log format", head + "access_log:\n  format: logfmt\n", 10, "access_log.format", `format "logfmt" is unknown (known: text, json)`},
		{"unknown log key", head + "error_log:\n  file: x.log\n", 10, "error_log.file", `key "file" is not known here (known: path, format)`},
		{"log directory missing", head + "access_log:\n  path: " + filepath.Join(logDir, "no", "access.log") + "\n", 10,
			"access_log.path", "directory " + fmt.Sprintf("%q", filepath.Join(logDir, "no")) + " does not exist"},
		{"log path is a directory", head + "error_log:\n  path: " + logDir + "\n", 10, "error_log.path", "is a directory"},
		{"log directory is a file", head + "error_log: {path: " + filepath.Join(notDir, "error.log") + "}\n", 9, "error_log.path",
			fmt.Sprintf("%q is not a directory", notDir)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "bad.yaml", tt.yaml)
			c, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", c)
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error is %T, want *Error: %v", err, err)
			}
			want := fmt.Sprintf("%s:%d: ", path, tt.line)
			if tt.key != "" {
				want += tt.key + ": "
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.HasPrefix(line, want) && strings.Contains(line, tt.msg) {
					return
				}
			}
			t.Errorf("no line starts with %q and contains %q in:\n%v", want, tt.msg, err)
		})
	}
}

func TestLoadReportsAllProblems(t *testing.T) {
	path := writeFile(t, t.TempDir(), "many.yaml", `listeners:
  - address: localhost
  - address: :80
    color: blue
routes:
  - host: "a*.com"
    upstream: missing
upstreams:
  app:
    balance: hashed
    servers: []
timeouts:
  idle: -5s
`)
	_, err := Load(path)
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error is %T, want *Error: %v", err, err)
	}
	want := []Problem{
		{path, 2, "listeners[0].address", `"localhost" is not host:port (missing port in address)`},
		{path, 4, "listeners[1].color", `key "color" is not known here (known: address, tls, redirect_https)`},
		{path, 6, "routes[0].host", `"a*.com": a wildcard is only allowed as a whole first label, as in "*.example.com"`},
		{path, 7, "routes[0].upstream", `upstream "missing" is not defined (defined: app)`},
		{path, 10, "upstreams.app.balance", `balance "hashed" is unknown (known: least_conn, round_robin, hash)`},
		{path, 11, "upstreams.app.servers", "at least one server is needed"},
		{path, 13, "timeouts.idle", "must be more than 0, not -5s"},
	}
	if fmt.Sprint(cerr.Problems) != fmt.Sprint(want) {
		t.Errorf("problems:\n%v\nwant:\n%v", err, &Error{Problems: want})
	}
}

func TestLoadStopsAfterUndecodableValues(t *testing.T) {
	// upstreams cannot be decoded, so checking the routes against it would
	// only add noise: only the decoding problems are reported.
	path := writeFile(t, t.TempDir(), "types.yaml", `listeners: [{address: ":80"}]
routes: [{upstream: app}]
upstreams: [app]
timeouts: {connect: soon}
`)
	_, err := Load(path)
	want := path + ":3: upstreams: expected a mapping, got a list\n" +
		path + `:4: timeouts.connect: "soon" is not a duration (write it like "5s", "250ms" or "1h30m")`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error = %v, want one wrapping os.ErrNotExist", err)
	}
}

func TestParseRejectsSecondDocument(t *testing.T) {
	_, err := Parse("two.yaml", []byte(head+"---\n"+head))
	if err == nil || !strings.HasPrefix(err.Error(), "two.yaml:9: a second YAML document") {
		t.Errorf("error = %v", err)
	}
}

func TestValidateConfigBuiltInGo(t *testing.T) {
	c := &Config{
		Listeners: []Listener{{Address: "127.0.0.1:0"}},
		Routes:    []Route{{Upstream: "app"}},
		Upstreams: map[string]*Upstream{"app": {Servers: []Server{{Address: "127.0.0.1:3000"}}}},
	}
	c.ApplyDefaults()
	err := c.Validate()
	// Port 0 asks the OS for a free port in Go code too, but the file
	// format wants a real port: listeners[0].address is the only problem.
	want := `listeners[0].address: "127.0.0.1:0": port "0" is not a number from 1 to 65535`
	if err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want %s", err, want)
	}

	c.Listeners[0].Address = "127.0.0.1:8080"
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if c.Routes[0].Path != "/" || c.Upstreams["app"].Balance != "least_conn" || c.Timeouts.Idle.Std() != time.Hour {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestParseHashKey(t *testing.T) {
	for s, want := range map[string]HashKey{
		"ip":            {Kind: HashKeyIP},
		"header:X-User": {Kind: HashKeyHeader, Name: "X-User"},
		"cookie:sid":    {Kind: HashKeyCookie, Name: "sid"},
		"query:room":    {Kind: HashKeyQuery, Name: "room"},
	} {
		if got, err := ParseHashKey(s); err != nil || got != want {
			t.Errorf("ParseHashKey(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "ip:x", "header", "header:", "body:x", "IP"} {
		if got, err := ParseHashKey(s); err == nil {
			t.Errorf("ParseHashKey(%q) = %+v, want an error", s, got)
		}
	}
}
