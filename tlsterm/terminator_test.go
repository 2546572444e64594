package tlsterm

import (
	"crypto/tls"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/testpki"
)

// writePair writes a certificate for names, valid until notAfter, with the
// given serial.
func writePair(t *testing.T, dir, base string, serial int64, notAfter time.Time, names ...string) config.Certificate {
	t.Helper()
	c := testpki.Pair(t, testpki.Options{Names: names, Serial: serial, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: notAfter, Dir: dir, File: base})
	return config.Certificate{CertFile: c.CertFile, KeyFile: c.KeyFile}
}

func serialFor(t *testing.T, term *Terminator, sni string) int64 {
	t.Helper()
	c, err := term.getCertificate(&tls.ClientHelloInfo{ServerName: sni})
	if err != nil {
		t.Fatalf("SNI %q: %v", sni, err)
	}
	return c.Leaf.SerialNumber.Int64()
}

func TestLookupOrder(t *testing.T) {
	dir := t.TempDir()
	day := time.Now().Add(24 * time.Hour)
	term, err := New(&config.TLS{Certificates: []config.Certificate{
		writePair(t, dir, "first", 1, day, "first.test"),
		writePair(t, dir, "wild", 2, day, "*.example.test"),
		writePair(t, dir, "exact", 3, day, "api.example.test", "other.test"),
		writePair(t, dir, "dup", 4, day, "first.test"), // listed twice: the first wins
	}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for sni, want := range map[string]int64{
		"": 1, "first.test": 1, "nobody.test": 1, "www.example.test": 2, "api.example.test": 3,
		"API.Example.Test.": 3, "other.test": 3, "a.b.example.test": 1, "example.test": 1,
	} {
		if got := serialFor(t, term, sni); got != want {
			t.Errorf("SNI %q: serial %d, want %d", sni, got, want)
		}
	}
}

// A reload that meets an expired, not yet valid or mismatched pair keeps the certificates
// in use and says why; a poll reports one broken change once.
func TestReloadRefusesBrokenPairs(t *testing.T) {
	dir := t.TempDir()
	cert := writePair(t, dir, "live", 1, time.Now().Add(24*time.Hour), "s.test")
	var logged []string
	term, err := New(&config.TLS{Certificates: []config.Certificate{cert}}, Options{
		Logf: func(format string, args ...any) { logged = append(logged, format) },
	})
	if err != nil {
		t.Fatal(err)
	}
	expired := writePair(t, dir, "expired", 2, time.Now().Add(-time.Hour), "s.test")
	os.Rename(expired.CertFile, cert.CertFile)
	os.Rename(expired.KeyFile, cert.KeyFile)
	if err := term.Reload(); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("reload of an expired certificate: %v", err)
	}
	if got := serialFor(t, term, "s.test"); got != 1 {
		t.Fatalf("serving serial %d after a refused reload", got)
	}
	future := testpki.Pair(t, testpki.Options{Names: []string{"s.test"}, Serial: 4,
		NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(48 * time.Hour), Dir: dir, File: "future"})
	os.Rename(future.CertFile, cert.CertFile)
	os.Rename(future.KeyFile, cert.KeyFile)
	if err := term.Reload(); err == nil || !strings.Contains(err.Error(), cert.CertFile+`" is not valid before`) {
		t.Fatalf("reload of a certificate not valid yet: %v", err)
	}
	if got := serialFor(t, term, "s.test"); got != 1 {
		t.Fatalf("serving serial %d after a refused reload", got)
	}
	other := writePair(t, dir, "other", 3, time.Now().Add(24*time.Hour), "s.test")
	os.Rename(other.KeyFile, cert.KeyFile) // a key of another certificate
	logged = nil
	term.reloadIfChanged()
	term.reloadIfChanged()
	if len(logged) != 1 || !strings.Contains(logged[0], "refused") {
		t.Fatalf("log after two polls of one broken change: %q", logged)
	}
	if got := serialFor(t, term, "s.test"); got != 1 {
		t.Fatalf("serving serial %d after a mismatched key", got)
	}
}

// A detached Conn is the caller's: Close leaves the connection open, so an
// HTTP server's cleanup after a hijack does not cut the tunnel that took it.
func TestDetachedConnSurvivesClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	c := &Conn{Conn: tls.Server(server, &tls.Config{})}
	c.Detach()
	if err := c.Close(); err != nil {
		t.Fatalf("Close of a detached conn: %v", err)
	}
	if _, err := server.Write([]byte("x")); err != nil {
		t.Fatalf("the socket was closed: %v", err)
	}
	got := make([]byte, 1)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(got); err != nil || got[0] != 'x' {
		t.Fatalf("read %q, %v", got, err)
	}
	// Not detached: Close closes.
	c2 := &Conn{Conn: tls.Server(server, &tls.Config{})}
	c2.Close()
	if _, err := server.Write([]byte("y")); err == nil {
		t.Fatal("Close of an attached conn left the socket open")
	}
}
