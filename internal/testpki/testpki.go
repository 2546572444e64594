// Package testpki makes the certificates tests need: a certificate
// authority made for one test, and certificates it signs for servers and
// clients, written as PEM files (what wsgate's config names) and loaded as
// tls.Certificates (what Go peers use).
package testpki

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
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CA is a certificate authority made for one test.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Pool holds Cert, for Go clients and servers that must trust the CA.
	Pool *x509.CertPool
	// File is Cert in PEM, for a config's ca_file.
	File string
	// Dir is where the CA's files and, by default, its certificates go.
	Dir string
}

// NewCA makes a CA named name, valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca := &CA{Key: newKey(t), Dir: t.TempDir(), Pool: x509.NewCertPool()}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.Key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	ca.Pool.AddCert(ca.Cert)
	ca.File = writePEM(t, filepath.Join(ca.Dir, fileBase(name)+"-ca.crt"), "CERTIFICATE", der)
	return ca
}

// Options describe a certificate. The zero value of each field has a
// default.
type Options struct {
	// Names become the SANs: IP addresses as IP SANs, the rest as DNS
	// names.
	Names []string
	// Subject defaults to the common name Names[0].
	Subject pkix.Name
	// Serial defaults to a random one; a test can set one to recognize
	// the certificate a handshake got.
	Serial int64
	// Client makes a client certificate; the default is a server's.
	Client bool
	// NotBefore defaults to an hour ago, NotAfter to a day from now.
	NotBefore, NotAfter time.Time
	// Dir defaults to the CA's Dir; File, the base of the .crt and .key
	// names, to Names[0] or the subject's common name.
	Dir, File string
}

// Cert is a certificate and its key.
type Cert struct {
	CertFile, KeyFile string
	Pair              tls.Certificate
	Leaf              *x509.Certificate
}

// SPKIHash is base64(SHA-256(SubjectPublicKeyInfo)) of the certificate, the
// form Chromium's --ignore-certificate-errors-spki-list takes.
func (c Cert) SPKIHash() string {
	sum := sha256.Sum256(c.Leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// Issue makes a certificate signed by the CA, with a key of its own.
func (ca *CA) Issue(t testing.TB, o Options) Cert {
	t.Helper()
	if o.Subject.CommonName == "" && len(o.Names) > 0 {
		o.Subject.CommonName = o.Names[0]
	}
	usage := x509.ExtKeyUsageServerAuth
	if o.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	serial := big.NewInt(o.Serial)
	if o.Serial == 0 {
		serial = randomSerial(t)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      o.Subject,
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	for _, n := range o.Names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir, base := o.Dir, o.File
	if dir == "" {
		dir = ca.Dir
	}
	if base == "" {
		base = fileBase(o.Subject.CommonName)
	}
	c := Cert{
		CertFile: writePEM(t, filepath.Join(dir, base+".crt"), "CERTIFICATE", der),
		KeyFile:  writePEM(t, filepath.Join(dir, base+".key"), "EC PRIVATE KEY", keyDER),
	}
	if c.Pair, err = tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
		t.Fatal(err)
	}
	c.Leaf = c.Pair.Leaf
	return c
}

// fileBase makes a name usable as a file name.
func fileBase(name string) string {
	return strings.NewReplacer(".", "_", ":", "_", "/", "_", " ", "_").Replace(name)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func randomSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Pair is Issue by a CA made for this certificate alone, for tests that
// need a certificate and its key but no CA to trust.
func Pair(t testing.TB, o Options) Cert {
	t.Helper()
	return NewCA(t, "testpki pair CA").Issue(t, o)
}
