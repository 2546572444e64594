package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
)

// writeCertPair writes a self-signed certificate for name and its key into
// dir and returns their paths.
func writeCertPair(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, dir, name+".crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, dir, name+".key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
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
