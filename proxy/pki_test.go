package proxy

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"slices"
	"testing"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/testpki"
)

// testCA signs the certificates of TLS listeners, TLS backends and
// clients in this package's tests. Every server certificate also holds
// 127.0.0.1, where the test servers listen.
type testCA struct{ *testpki.CA }

func newTestCA(t testing.TB, name string) *testCA { return &testCA{testpki.NewCA(t, name)} }

// issue makes a certificate for name and 127.0.0.1, for a server or, with
// client set, for a client. It returns the files and the loaded pair.
func (ca *testCA) issue(t testing.TB, name string, client bool) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	c := ca.Issue(t, testpki.Options{Names: []string{name, "127.0.0.1"}, Client: client})
	return c.CertFile, c.KeyFile, c.Pair
}

// server is a listener certificate for names, with a serial a test can
// recognize in the certificate a handshake gets; files start with base.
func (ca *testCA) server(t testing.TB, base string, serial int64, names ...string) config.Certificate {
	t.Helper()
	c := ca.Issue(t, testpki.Options{Names: append(slices.Clip(names), "127.0.0.1"), Serial: serial, File: base})
	return config.Certificate{CertFile: c.CertFile, KeyFile: c.KeyFile}
}

// client is a client certificate with the given subject, for mutual TLS.
func (ca *testCA) client(t testing.TB, base string, subject pkix.Name) tls.Certificate {
	t.Helper()
	return ca.Issue(t, testpki.Options{Subject: subject, Client: true, File: base}).Pair
}
