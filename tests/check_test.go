package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// validConfig is the smallest useful configuration; nothing needs to
// listen at the upstream address for -check.
func validConfig(listen string) string {
	return fmt.Sprintf(`listeners:
  - address: %s
routes:
  - host: ws.repo
    upstream: ws_server
upstreams:
  ws_server:
    servers:
      - address: 127.0.0.1:3000
`, listen)
}

// invalidConfig has two problems at known lines: an unknown key (line 3)
// and a route to an upstream that is not defined (line 6).
func invalidConfig(listen string) string {
	return fmt.Sprintf(`listeners:
  - address: %s
    backlog: 128
routes:
  - host: ws.repo
    upstream: nowhere
upstreams:
  ws_server:
    servers:
      - address: 127.0.0.1:3000
`, listen)
}

func TestCheckValid(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, validConfig("127.0.0.1:8080"))
	code, stdout, stderr := runWsgate(t, "", "-check", "-config", path)
	if code != 0 || strings.TrimSpace(stdout) != "ok" {
		t.Fatalf("-check on a valid file: exit %d, stdout %q, stderr %q; want 0 and \"ok\"", code, stdout, stderr)
	}
}

func TestCheckInvalid(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, invalidConfig("127.0.0.1:8080"))
	code, stdout, stderr := runWsgate(t, "", "-check", "-config", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout %q, stderr %q", code, stdout, stderr)
	}
	if strings.Contains(stdout, "ok") {
		t.Errorf("stdout says %q for an invalid file", stdout)
	}
	// Each problem must be findable in an editor: file:line, then the key.
	for _, want := range []struct{ loc, key string }{
		{path + ":3:", "backlog"},
		{path + ":6:", "routes[0].upstream"},
	} {
		line := lineContaining(stderr, want.loc)
		if line == "" {
			t.Errorf("stderr has no line starting at %q:\n%s", want.loc, stderr)
			continue
		}
		if !strings.Contains(line, want.key) {
			t.Errorf("stderr line %q does not name the key %q", line, want.key)
		}
	}
	if !strings.Contains(stderr, `"nowhere"`) {
		t.Errorf("stderr does not name the missing upstream \"nowhere\":\n%s", stderr)
	}
}

// acmeConfig has a plain listener redirecting to a TLS listener whose
// certificates come from ACME only; domain is line 10.
func acmeConfig(domain, storageDir string) string {
	return fmt.Sprintf(`listeners:
  - address: 127.0.0.1:8080
    redirect_https: true
  - address: 127.0.0.1:8443
    tls:
      acme:
        email: ops@example.com
        storage_dir: %s
        domains:
          - %s
routes:
  - host: ws.repo
    upstream: ws_server
upstreams:
  ws_server:
    servers:
      - address: 127.0.0.1:3000
`, storageDir, domain)
}

// -check accepts a TLS listener with acme and no certificates, and
// neither creates storage_dir nor contacts the CA.
func TestCheckACME(t *testing.T) {
	t.Parallel()
	storage := filepath.Join(t.TempDir(), "acme")
	path := writeConfig(t, acmeConfig("ws.example.com", storage))
	code, stdout, stderr := runWsgate(t, "", "-check", "-config", path)
	if code != 0 || strings.TrimSpace(stdout) != "ok" {
		t.Fatalf("-check with acme: exit %d, stdout %q, stderr %q; want 0 and \"ok\"", code, stdout, stderr)
	}
	if _, err := os.Stat(storage); !os.IsNotExist(err) {
		t.Errorf("-check touched storage_dir %s: %v", storage, err)
	}
}

// A bad acme key is reported as file:line: key: message.
func TestCheckACMEInvalid(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, acmeConfig("localhost", filepath.Join(t.TempDir(), "acme")))
	code, stdout, stderr := runWsgate(t, "", "-check", "-config", path)
	if code != 1 || strings.Contains(stdout, "ok") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and no \"ok\"", code, stdout, stderr)
	}
	want := path + `:10: listeners[1].tls.acme.domains[0]: "localhost" is not a DNS name with a dot`
	if line := lineContaining(stderr, path+":"); !strings.HasPrefix(line, want) {
		t.Errorf("stderr line %q; want it to start with %q (all of stderr:\n%s)", line, want, stderr)
	}
}

func TestCheckMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "absent.yaml")
	code, stdout, stderr := runWsgate(t, "", "-check", "-config", path)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stdout %q, stderr %q", code, stdout, stderr)
	}
	if !strings.Contains(stderr, path) || !strings.Contains(stderr, "no such file") {
		t.Errorf("stderr %q should name %s and say it does not exist", stderr, path)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runWsgate(t, "", "-version")
	if code != 0 || !strings.HasPrefix(stdout, "wsgate") {
		t.Fatalf("-version: exit %d, stdout %q, stderr %q; want 0 and \"wsgate ...\"", code, stdout, stderr)
	}
}

// The example shipped with the repository is what users copy first; it
// must at least pass its own validator. -check runs from the module root
// so that relative paths in it (certificates) resolve as they would for a
// user running from a checkout.
func TestExampleConfigChecks(t *testing.T) {
	t.Parallel()
	path := filepath.Join(moduleRoot, "config.example.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the repository should ship config.example.yaml: %v", err)
	}
	code, stdout, stderr := runWsgate(t, moduleRoot, "-check", "-config", path)
	if code != 0 || strings.TrimSpace(stdout) != "ok" {
		t.Fatalf("-check config.example.yaml: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
}

// A config with problems must stop the gateway before it binds anything:
// a half-valid config must never serve.
func TestRunBadConfigExitsWithoutBinding(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	path := writeConfig(t, invalidConfig(addr))
	p := startWsgate(t, "", "-config", path)
	code := p.wait(t, 10*time.Second)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	stderr := p.stderr.String()
	if strings.Contains(stderr, "listening on") {
		t.Errorf("wsgate bound a listener with an invalid config:\n%s", stderr)
	}
	if lineContaining(stderr, path+":6:") == "" {
		t.Errorf("stderr does not report the problem at %s:6:\n%s", path, stderr)
	}
}

func TestRunAddressInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	p := startWsgate(t, "", "-config", writeConfig(t, validConfig(addr)))
	code := p.wait(t, 10*time.Second)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	stderr := p.stderr.String()
	if !strings.Contains(stderr, addr) || !strings.Contains(stderr, "address already in use") {
		t.Errorf("stderr should name %s and say it is in use:\n%s", addr, stderr)
	}
}

// lineContaining returns the first line of s that contains sub, or "".
func lineContaining(s, sub string) string {
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			return strings.TrimRight(line, "\n")
		}
	}
	return ""
}
