package tlsterm

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/testpki"
	"golang.org/x/sys/unix"
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

// The client's close_notify that arrives with its last bytes is a Read of
// its own: the bytes come first with no error (a reader that needs no
// more, say at the end of a request body, does not learn of an end), and
// the next Read returns io.EOF and sets ReadEOF.
func TestEndOfStreamIsAReadOfItsOwn(t *testing.T) {
	term, err := New(&config.TLS{Certificates: []config.Certificate{
		writePair(t, t.TempDir(), "s", 1, time.Now().Add(24*time.Hour), "s.test"),
	}}, Options{HandshakeTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := term.Listener(tcp)
	defer ln.Close()
	dialed := make(chan error, 1)
	var client *tls.Conn
	go func() {
		var err error
		// TLS 1.2: its alerts are records of their own type, which is
		// what crypto/tls looks for behind the data (TLS 1.3 hides it).
		client, err = tls.Dial("tcp", tcp.Addr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: "s.test", MaxVersion: tls.VersionTLS12})
		dialed <- err
	}()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	server := sc.(*Conn)
	server.SetDeadline(time.Now().Add(10 * time.Second))
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-dialed; err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// Both records in the server's socket before it reads, so crypto/tls
	// meets the close_notify right behind the data.
	rc, err := client.NetConn().(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		queued := -1
		rc.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client's records were never acknowledged")
		}
	}
	buf := make([]byte, 100)
	n, err := server.Read(buf)
	if string(buf[:n]) != "hello" || err != nil || server.ReadEOF() {
		t.Fatalf("first read: %q, %v, ReadEOF %v; want \"hello\", no error, no EOF yet", buf[:n], err, server.ReadEOF())
	}
	n, err = server.Read(buf)
	if n != 0 || err != io.EOF || !server.ReadEOF() {
		t.Fatalf("second read: %d bytes, %v, ReadEOF %v; want io.EOF", n, err, server.ReadEOF())
	}
}
