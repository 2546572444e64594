package config

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testpki"
)

// writeCertPair writes a certificate for name and its key into dir and
// returns their paths.
func writeCertPair(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	return writeCertPairValid(t, dir, name, time.Time{}, time.Time{})
}

// writeCertPairValid is writeCertPair with a chosen validity window (zero:
// testpki's default).
func writeCertPairValid(t *testing.T, dir, name string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	c := testpki.Pair(t, testpki.Options{Names: []string{name}, NotBefore: notBefore, NotAfter: notAfter, Dir: dir, File: name})
	return c.CertFile, c.KeyFile
}

// -check parses each certificate with its key, as the proxy will at start.
func TestCertificatePairChecked(t *testing.T) {
	dir := t.TempDir()
	crtA, keyA := writeCertPair(t, dir, "a.test")
	_, keyB := writeCertPair(t, dir, "b.test")
	garbage := writeFile(t, dir, "garbage.crt", "not a certificate")
	for name, pair := range map[string][2]string{
		"key of another certificate": {crtA, keyB},
		"not PEM":                    {garbage, keyA},
	} {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, dir, "wsgate.yaml", fmt.Sprintf(`listeners:
  - address: 127.0.0.1:8443
    tls:
      certificates:
        - cert_file: %s
          key_file: %s
routes: [{path: /, upstream: u}]
upstreams: {u: {servers: [{address: 127.0.0.1:3000}]}}
`, pair[0], pair[1]))
			_, err := Load(path)
			if err == nil {
				t.Fatal("loaded")
			}
			if want := path + ":5: listeners[0].tls.certificates[0].cert_file: cannot use certificate"; !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not contain %q", err, want)
			}
		})
	}
}

// The TLS keys: each mistake is reported at its key, and a certificate
// about to expire is a warning, not an error.
func TestTLSKeysChecked(t *testing.T) {
	dir := t.TempDir()
	crt, key := writeCertPair(t, dir, "ok.test")
	oldCrt, oldKey := writeCertPairValid(t, dir, "old.test", time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	futureCrt, futureKey := writeCertPairValid(t, dir, "future.test", time.Now().Add(time.Hour), time.Now().Add(48*time.Hour))
	soonCrt, soonKey := writeCertPairValid(t, dir, "soon.test", time.Now().Add(-time.Hour), time.Now().Add(72*time.Hour))
	tail := `routes: [{path: /, upstream: u}]
upstreams: {u: {servers: [{address: 127.0.0.1:3000}]}}
`
	for _, tc := range []struct {
		name, listeners, want string
	}{
		{"expired", fmt.Sprintf(`  - address: 127.0.0.1:8443
    tls: {certificates: [{cert_file: %s, key_file: %s}]}
`, oldCrt, oldKey), ":3: listeners[0].tls.certificates[0].cert_file: \"" + oldCrt + "\" expired on "},
		{"not valid yet", fmt.Sprintf(`  - address: 127.0.0.1:8443
    tls: {certificates: [{cert_file: %s, key_file: %s}]}
`, futureCrt, futureKey), ":3: listeners[0].tls.certificates[0].cert_file: \"" + futureCrt + "\" is not valid before "},
		{"min_version", fmt.Sprintf(`  - address: 127.0.0.1:8443
    tls:
      certificates: [{cert_file: %s, key_file: %s}]
      min_version: "1.0"
`, crt, key), ":5: listeners[0].tls.min_version: \"1.0\" is not a TLS version wsgate accepts (1.2 or 1.3)"},
		{"client_auth without a CA", fmt.Sprintf(`  - address: 127.0.0.1:8443
    tls:
      certificates: [{cert_file: %s, key_file: %s}]
      client_auth: require
`, crt, key), ":5: listeners[0].tls.client_auth: needs client_ca_file"},
		{"client CA not PEM", fmt.Sprintf(`  - address: 127.0.0.1:8443
    tls:
      certificates: [{cert_file: %s, key_file: %s}]
      client_ca_file: %s
`, crt, key, key), ":5: listeners[0].tls.client_ca_file: \"" + key + "\" holds no PEM certificate"},
		{"redirect on a TLS listener", fmt.Sprintf(`  - address: 127.0.0.1:8443
    redirect_https: true
    tls: {certificates: [{cert_file: %s, key_file: %s}]}
`, crt, key), ":3: listeners[0].redirect_https: is for plain listeners"},
		{"redirect without TLS", `  - address: 127.0.0.1:8080
    redirect_https: true
`, ":3: listeners[0].redirect_https: no listener has tls"},
		{"acme wildcard", `  - address: 127.0.0.1:8443
    tls:
      acme:
        domains: ["*.example.com"]
`, ":5: listeners[0].tls.acme.domains[0]: \"*.example.com\": wildcard names need the DNS-01 challenge"},
		{"acme http directory", `  - address: 127.0.0.1:8443
    tls:
      acme:
        domains: [ws.example.com]
        directory_url: http://127.0.0.1:14000/dir
`, ":6: listeners[0].tls.acme.directory_url: \"http://127.0.0.1:14000/dir\" is not an https:// URL"},
		{"acme name in two storage dirs", `  - address: 127.0.0.1:8443
    tls: {acme: {domains: [ws.example.com], storage_dir: acme-a}}
  - address: 127.0.0.1:9443
    tls:
      acme:
        storage_dir: acme-b
        domains: [api.example.com, WS.example.com]
`, ":8: listeners[1].tls.acme.domains[1]: \"WS.example.com\" is also in listeners[0].tls.acme, whose storage_dir is \"acme-a\", not \"acme-b\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, "wsgate.yaml", "listeners:\n"+tc.listeners+tail)
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), path+tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, path+tc.want)
			}
		})
	}

	path := writeFile(t, dir, "wsgate.yaml", fmt.Sprintf(`listeners:
  - address: 127.0.0.1:8443
    tls: {certificates: [{cert_file: %s, key_file: %s}]}
`, soonCrt, soonKey)+tail)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].String(), path+":3: listeners[0].tls.certificates[0].cert_file: \""+soonCrt+"\" expires on ") {
		t.Fatalf("warnings %v", c.Warnings)
	}
	if tc := c.Listeners[0].TLS; tc.MinVersion != "1.2" || tc.ClientCertHeader != "X-Client-Cert-Subject" {
		t.Fatalf("defaults: %+v", tc)
	}
}

func TestUpstreamTLSChecked(t *testing.T) {
	dir := t.TempDir()
	crt, _ := writeCertPair(t, dir, "up.test")
	for _, tc := range []struct{ name, tls, want string }{
		{"not enabled", "{ca_file: " + crt + "}", ":4: upstreams.u.tls.enabled: must be true when tls is written"},
		{"key without cert", "{enabled: true, key_file: " + crt + "}", ":4: upstreams.u.tls.cert_file: is needed with key_file"},
		{"skip verify with a CA", "{enabled: true, ca_file: " + crt + ", insecure_skip_verify: true}", ":4: upstreams.u.tls.insecure_skip_verify: contradicts ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, "wsgate.yaml", `listeners: [{address: 127.0.0.1:8080}]
routes: [{path: /, upstream: u}]
upstreams:
  u: {servers: [{address: 127.0.0.1:3000}], tls: `+tc.tls+`}
`)
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), path+tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, path+tc.want)
			}
		})
	}
}

// Listeners may share acme names when they share the storage_dir (here
// the default), where each finds the other's challenge answers.
func TestACMENameSharedWithOneStorage(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "wsgate.yaml", `listeners:
  - address: 127.0.0.1:8443
    tls: {acme: {domains: [ws.example.com]}}
  - address: 127.0.0.1:9443
    tls: {acme: {domains: [ws.example.com]}}
routes: [{path: /, upstream: u}]
upstreams: {u: {servers: [{address: 127.0.0.1:3000}]}}
`)
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
}
