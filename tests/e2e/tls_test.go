package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a certificate authority made by one test for the gateway's TLS
// listener. Chromium does not know it; browser.js is told to accept the
// keys of the certificates the test trusts (testCert.SPKIHash), and the Go
// side checks the served certificates against the CA itself.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	// Pool holds the CA certificate, for Go clients.
	Pool *x509.CertPool
	dir  string
}

// testCert is a server certificate issued by a testCA and written, with its
// key, in PEM files for the gateway's tls.certificates.
type testCert struct {
	CertFile, KeyFile string
	Leaf              *x509.Certificate
	// SPKIHash is base64(SHA-256(SubjectPublicKeyInfo)) of the
	// certificate, the form Chromium's
	// --ignore-certificate-errors-spki-list takes.
	SPKIHash string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		Subject:               pkix.Name{CommonName: "wsgate e2e test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{key: key, cert: cert, Pool: x509.NewCertPool(), dir: t.TempDir()}
	ca.Pool.AddCert(cert)
	return ca
}

func randomSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// issue makes a server certificate with a key of its own for names: IP
// addresses become IP SANs, anything else DNS SANs; the first name is
// also the subject's common name.
func (ca *testCA) issue(t *testing.T, names ...string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(t),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := strings.NewReplacer(".", "_", ":", "_").Replace(names[0])
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return testCert{
		CertFile: ca.write(t, base+".crt", "CERTIFICATE", der),
		KeyFile:  ca.write(t, base+".key", "EC PRIVATE KEY", keyDER),
		Leaf:     leaf,
		SPKIHash: base64.StdEncoding.EncodeToString(sum[:]),
	}
}

func (ca *testCA) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
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
func (ca *testCA) checkServed(t *testing.T, port int, serverName string, want testCert) {
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
func tlsListenerYAML(address string, certs ...testCert) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - address: %s\n    tls:\n      certificates:\n", address)
	for _, c := range certs {
		// %q: a Go quoted string is a valid YAML double-quoted one for
		// these paths.
		fmt.Fprintf(&b, "        - cert_file: %q\n          key_file: %q\n", c.CertFile, c.KeyFile)
	}
	return b.String()
}
