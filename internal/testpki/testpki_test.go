package testpki

import (
	"crypto/x509"
	"testing"
)

func TestIssuedCertificatesVerify(t *testing.T) {
	ca := NewCA(t, "test CA")
	srv := ca.Issue(t, Options{Names: []string{"a.test", "127.0.0.1"}, Serial: 42})
	for _, name := range []string{"a.test", "127.0.0.1"} {
		if _, err := srv.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, DNSName: name}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if srv.Leaf.SerialNumber.Int64() != 42 || srv.Leaf.Subject.CommonName != "a.test" {
		t.Errorf("serial %v, subject %q", srv.Leaf.SerialNumber, srv.Leaf.Subject.CommonName)
	}
	cl := ca.Issue(t, Options{Client: true, File: "client"})
	if _, err := cl.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if other := Pair(t, Options{Names: []string{"a.test"}}); other.SPKIHash() == srv.SPKIHash() {
		t.Error("two certificates share a key")
	}
}
