package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/syncbuf"
)

// okAnswer is a raw upstream's answer to every request.
func okAnswer(string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" }

// readAnswer reads everything the gateway sends on c until it closes, and
// parses it as one response.
func readAnswer(t *testing.T, c net.Conn) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(rawReadLimit))
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("no close from the gateway: %v (got %q)", err, raw)
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(raw))), nil)
	if err != nil {
		t.Fatalf("not a response: %q", raw)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// A head fasthttp cannot parse gets a one-line reason: never the head
// itself (its cookies), never the gateway's address, in the answer or in
// the error log.
func TestMalformedHeadEchoesNothing(t *testing.T) {
	var errLog syncbuf.Buffer
	g := startGatewayOpts(t, configFor(deadAddress(t)), Options{AccessLog: io.Discard, ErrorLog: &errLog})
	addr := g.Addrs()[0].String()
	const secret = "Cookie: session=s3cr3t-token\r\n"
	for _, head := range []string{
		"GET / HTTP/1.1\r\nHost: a.test\r\n" + secret + "no colon here\r\n\r\n",
		"GET /\r\nHost: a.test\r\n" + secret + "\r\n",
		"GET / HTTP/1.1\r\n" + secret + "\r\n", // HTTP/1.1 without Host
		"G\x01T / HTTP/1.1\r\nHost: a.test\r\n" + secret + "\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, head)
		resp, body := readAnswer(t, c)
		c.Close()
		if resp.StatusCode != 400 || body != "malformed request\n" {
			t.Errorf("%q: %d %q, want 400 \"malformed request\"", head, resp.StatusCode, body)
		}
	}
	if log := errLog.String(); strings.Contains(log, "s3cr3t") {
		t.Errorf("the error log quotes the request head:\n%s", log)
	}
}
