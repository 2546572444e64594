package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testpki"
)

// testCA is a certificate authority made by one test for the gateway's TLS
// listener. Chromium does not know it; browser.js is told to accept the
// keys of the certificates the test trusts (Cert.SPKIHash), and the Go
// side checks the served certificates against the CA itself.
type testCA struct{ *testpki.CA }

func newTestCA(t *testing.T) *testCA { return &testCA{testpki.NewCA(t, "wsgate e2e test CA")} }

// issue makes a server certificate for names (IP addresses become IP SANs,
// anything else DNS SANs), written in PEM files for the gateway's
// tls.certificates.
func (ca *testCA) issue(t *testing.T, names ...string) testpki.Cert {
	t.Helper()
	return ca.Issue(t, testpki.Options{Names: names})
}

// clientConfig is a Go client's TLS configuration that trusts only the
// CA and verifies the certificate for serverName (also sent as SNI unless
// it is an IP address).
func (ca *testCA) clientConfig(serverName string) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, ServerName: serverName}
}

// checkServed connects to the gateway's TLS listener on port as a client
// asking for serverName and checks that the certificate served is want and
// verifies against the CA for that name: the certificate Chromium is told
// to trust by its key is also a valid one for the name the page uses.
func (ca *testCA) checkServed(t *testing.T, port int, serverName string, want testpki.Cert) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", port), ca.clientConfig(serverName))
	if err != nil {
		t.Fatalf("TLS to the gateway for %s, verified against the test CA: %v", serverName, err)
	}
	defer c.Close()
	got := c.ConnectionState().PeerCertificates[0]
	if !got.Equal(want.Leaf) {
		t.Fatalf("TLS to the gateway for %s: served the certificate for %v %v, want the one for %v %v", serverName, got.DNSNames, got.IPAddresses, want.Leaf.DNSNames, want.Leaf.IPAddresses)
	}
}

// tlsListenerYAML is a listeners entry for wsgate's config: address with
// TLS offering certs (the first one to clients that send no SNI).
func tlsListenerYAML(address string, certs ...testpki.Cert) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - address: %s\n    tls:\n      certificates:\n", address)
	for _, c := range certs {
		// %q: a Go quoted string is a valid YAML double-quoted one for
		// these paths.
		fmt.Fprintf(&b, "        - cert_file: %q\n          key_file: %q\n", c.CertFile, c.KeyFile)
	}
	return b.String()
}
