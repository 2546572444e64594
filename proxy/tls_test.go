package proxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/config"
)

// selfSigned writes a certificate for name and its key into dir and returns
// the paths and a pool that trusts the certificate.
func selfSigned(t testing.TB, dir, name string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

// wss:// through a TLS listener: the client verifies the gateway's
// certificate, the tunnel runs over crypto/tls on the client side, and the
// upstream learns the original scheme.
func TestWSSEcho(t *testing.T) {
	protos := make(chan string, 1)
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case protos <- r.Header.Get("X-Forwarded-Proto"):
		default:
		}
		u := websocket.Upgrader{}
		c, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadLimit(8 << 20)
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil || c.WriteMessage(mt, msg) != nil {
				return
			}
		}
	}))
	certFile, keyFile, roots := selfSigned(t, t.TempDir(), "ws.test")
	cfg := configFor(up)
	cfg.Listeners[0].TLS = &config.TLS{Certificates: []config.Certificate{{CertFile: certFile, KeyFile: keyFile}}}
	g := startGateway(t, cfg)

	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "ws.test"}}
	c, _, err := d.Dial("wss://"+g.Addrs()[0].String()+"/secure", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadLimit(8 << 20)
	if p := <-protos; p != "https" {
		t.Fatalf("X-Forwarded-Proto %q, want https", p)
	}
	for _, size := range []int{0, 125, 65536, 1 << 20} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		if _, got, err := c.ReadMessage(); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("size %d: %d bytes back, %v", size, len(got), err)
		}
	}
}
