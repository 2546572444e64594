package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
)

// testCA is a certificate authority made for one test: it signs the
// certificates of TLS listeners, TLS backends and clients.
type testCA struct {
	dir  string
	file string // the CA certificate, PEM: a ca_file
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	ca := &testCA{dir: t.TempDir()}
	ca.key = newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if ca.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	ca.pool = x509.NewCertPool()
	ca.pool.AddCert(ca.cert)
	ca.file = writePEM(t, ca.dir, name+".crt", "CERTIFICATE", der)
	return ca
}

// issue makes a certificate for name (and 127.0.0.1) signed by the CA,
// for a server or, with client set, for a client. It returns the files and
// the loaded pair.
func (ca *testCA) issue(t testing.TB, name string, client bool) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	return ca.sign(t, name, time.Now().UnixNano(), pkix.Name{CommonName: name}, usage, []string{name})
}

// server is a listener certificate for names, with a serial a test can
// recognize in the certificate a handshake gets; files start with base.
func (ca *testCA) server(t testing.TB, base string, serial int64, names ...string) config.Certificate {
	t.Helper()
	certFile, keyFile, _ := ca.sign(t, base, serial, pkix.Name{CommonName: names[0]}, x509.ExtKeyUsageServerAuth, names)
	return config.Certificate{CertFile: certFile, KeyFile: keyFile}
}

// client is a client certificate with the given subject, for mutual TLS.
func (ca *testCA) client(t testing.TB, base string, subject pkix.Name) tls.Certificate {
	t.Helper()
	_, _, pair := ca.sign(t, base, time.Now().UnixNano(), subject, x509.ExtKeyUsageClientAuth, nil)
	return pair
}

// sign writes a certificate for subject and DNS names (plus 127.0.0.1)
// signed by the CA, and its key, into base.crt and base.key.
func (ca *testCA) sign(t testing.TB, base string, serial int64, subject pkix.Name, usage x509.ExtKeyUsage, names []string) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      subject,
		DNSNames:     names,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writePEM(t, ca.dir, base+".crt", "CERTIFICATE", der)
	keyFile = writePEM(t, ca.dir, base+".key", "EC PRIVATE KEY", keyDER)
	if pair, err = tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pair
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
