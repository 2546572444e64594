package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/upstream"
)

// httpClient is a net/http client of its own, so idle conns of one test
// never serve another; they are closed when the test ends.
func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

// rawHTTPUpstream is an upstream that sees request heads as bytes, so the
// test can check header spelling, order and absence (net/http would
// canonicalize names and hide Connection details). It answers each
// bodiless request with respond(head) and keeps the conn open for more.
func rawHTTPUpstream(t *testing.T, respond func(head string) string) (addr string, heads <-chan string) {
	t.Helper()
	ch := make(chan string, 100)
	addr = hostileUpstream(t, func(c net.Conn, _ *bufio.Reader, head string) bool {
		ch <- head
		_, err := io.WriteString(c, respond(head))
		return err == nil
	})
	return addr, ch
}

// readHead reads one message head, up to and including the blank line.
func readHead(br *bufio.Reader) (string, error) {
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		head.WriteString(line)
		if line == "\r\n" {
			return head.String(), nil
		}
	}
}

// headLines splits a message head into its header lines, without the
// start line and the blank line.
func headLines(head string) []string {
	lines := strings.Split(strings.TrimSuffix(head, "\r\n\r\n"), "\r\n")
	return lines[1:]
}

// headerValues returns the values of every line of head named name, in
// any case.
func headerValues(head, name string) []string {
	var vals []string
	for _, l := range headLines(head) {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			vals = append(vals, strings.TrimSpace(v))
		}
	}
	return vals
}

func recvHead(t *testing.T, heads <-chan string) string {
	t.Helper()
	select {
	case h := <-heads:
		return h
	case <-time.After(5 * time.Second):
		t.Fatal("upstream received no request")
		return ""
	}
}

func TestHTTPGetWithQuery(t *testing.T) {
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNonAuthoritativeInfo)
		fmt.Fprintf(w, "%s %s ? %s", r.Method, r.URL.Path, r.URL.RawQuery)
	}))
	gw := gatewayFor(t, up)
	resp, err := httpClient(t).Get("http://" + gw + "/a/b%2Fc?x=1&y=two%20words&z")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusNonAuthoritativeInfo {
		t.Errorf("status %d, want 203", resp.StatusCode)
	}
	if want := "GET /a/b/c ? x=1&y=two%20words&z"; body != want {
		t.Errorf("body %q, want %q", body, want)
	}
}

func TestHTTPPostLargeBody(t *testing.T) {
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	sum := sha256.Sum256(payload)
	want := hex.EncodeToString(sum[:])
	var gotUpstream atomic.Value
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s := sha256.Sum256(body)
		gotUpstream.Store(fmt.Sprintf("%s %d %s", r.Method, len(body), hex.EncodeToString(s[:])))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body) // echoed back, so the response path carries 1 MiB too
	}))
	gw := gatewayFor(t, up)
	resp, err := httpClient(t).Post("http://"+gw+"/upload", "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %.200s", resp.StatusCode, body)
	}
	if got, _ := gotUpstream.Load().(string); got != "POST 1048576 "+want {
		t.Errorf("upstream got %q, want POST 1048576 %s", got, want)
	}
	back := sha256.Sum256([]byte(body))
	if len(body) != len(payload) || hex.EncodeToString(back[:]) != want {
		t.Errorf("echoed body: %d bytes, sha256 %x; want %d bytes, %s", len(body), back, len(payload), want)
	}
}

func TestHTTPResponseHeadersRelayed(t *testing.T) {
	up, _ := rawHTTPUpstream(t, func(string) string {
		return "HTTP/1.1 200 OK\r\n" +
			"Content-Length: 5\r\n" +
			"Set-Cookie: a=1; Path=/\r\n" +
			"X-CUSTOM-header: yes\r\n" +
			"Connection: X-Foo\r\n" +
			"X-Foo: bar\r\n" +
			"Keep-Alive: timeout=5\r\n" +
			"Set-Cookie: b=2\r\n" +
			"\r\nhello"
	})
	gw := gatewayFor(t, up)
	out := rawRequest(t, gw, "GET / HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
	head, body, ok := strings.Cut(out, "\r\n\r\n")
	if !ok || !strings.HasPrefix(head, "HTTP/1.1 200 ") {
		t.Fatalf("response: %q", out)
	}
	head += "\r\n\r\n"
	if body != "hello" {
		t.Errorf("body %q", body)
	}
	if got := headerValues(head, "Set-Cookie"); len(got) != 2 || got[0] != "a=1; Path=/" || got[1] != "b=2" {
		t.Errorf("Set-Cookie %q, want both cookies", got)
	}
	// The gateway's server and client keep names as sent upstream.
	if !strings.Contains(head, "\r\nX-CUSTOM-header: yes\r\n") {
		t.Errorf("custom header missing or respelled:\n%s", head)
	}
	for _, name := range []string{"X-Foo", "Keep-Alive"} {
		if v := headerValues(head, name); len(v) > 0 {
			t.Errorf("hop-by-hop %s relayed: %q", name, v)
		}
	}
	// The only Connection the client may see is the gateway's own close,
	// answering the client's.
	for _, v := range headerValues(head, "Connection") {
		if !strings.EqualFold(v, "close") {
			t.Errorf("upstream's Connection relayed: %q", v)
		}
	}
}

func TestHTTPRequestHeadersForwarded(t *testing.T) {
	up, heads := rawHTTPUpstream(t, func(string) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	gw := gatewayFor(t, up)
	hop := []string{"Connection", "X-Hop", "Keep-Alive", "Proxy-Connection", "TE", "Upgrade", "Proxy-Authorization"}
	for _, c := range []struct{ name, request string }{
		{"canonical", "GET /h?q=1 HTTP/1.1\r\n" +
			"Host: front.example:8080\r\n" +
			"X-CuStom-Case: Value\r\n" +
			"Connection: close, X-Hop\r\n" +
			"X-Hop: secret\r\n" +
			"Keep-Alive: 300\r\n" +
			"Proxy-Connection: keep-alive\r\n" +
			"TE: deflate\r\n" +
			"Upgrade: h2c\r\n" +
			"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
			"X-Forwarded-For: 10.1.1.1\r\n" +
			"x-lower: v\r\n" +
			"\r\n"},
		// Clients (and HTTP/2-minded libraries) often send lower-case names;
		// the gateway keeps names as sent, so these must go too. A forged
		// x-real-ip must not reach the upstream next to the real one.
		{"lower-case", "GET /h?q=1 HTTP/1.1\r\n" +
			"host: front.example:8080\r\n" +
			"X-CuStom-Case: Value\r\n" +
			"connection: close, x-hop\r\n" +
			"X-HOP: secret\r\n" +
			"keep-alive: 300\r\n" +
			"proxy-connection: keep-alive\r\n" +
			"te: deflate\r\n" +
			"upgrade: h2c\r\n" +
			"proxy-authorization: Basic Zm9vOmJhcg==\r\n" +
			"x-forwarded-for: 10.1.1.1\r\n" +
			"x-real-ip: 6.6.6.6\r\n" +
			"x-forwarded-proto: https\r\n" +
			"x-lower: v\r\n" +
			"\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			out := rawRequest(t, gw, c.request)
			if !strings.HasPrefix(out, "HTTP/1.1 200 ") || !strings.HasSuffix(out, "\r\n\r\nok") {
				t.Fatalf("response %q", out)
			}
			// rawRequest reads until the gateway closes: "close" is a token
			// of the client's Connection list, which fasthttp alone ignores.
			if d := time.Since(start); d >= rawReadLimit {
				t.Errorf("client conn still open %v after asking Connection: close", d)
			}
			head := recvHead(t, heads)
			if !strings.HasPrefix(head, "GET /h?q=1 HTTP/1.1\r\n") {
				t.Errorf("request line: %q", head)
			}
			for _, name := range hop {
				if v := headerValues(head, name); len(v) > 0 {
					t.Errorf("hop-by-hop %s reached the upstream: %q", name, v)
				}
			}
			want := map[string]string{
				"Host":              "front.example:8080",
				"X-Forwarded-For":   "10.1.1.1, 127.0.0.1",
				"X-Forwarded-Proto": "http",
				"X-Forwarded-Host":  "front.example:8080",
				"X-Real-IP":         "127.0.0.1",
			}
			for name, val := range want {
				if got := headerValues(head, name); len(got) != 1 || got[0] != val {
					t.Errorf("%s = %q, want exactly [%q]", name, got, val)
				}
			}
			// fasthttp's client adds "User-Agent: fasthttp" unless told not to.
			if ua := headerValues(head, "User-Agent"); len(ua) > 0 {
				t.Errorf("User-Agent %q added", ua)
			}
			for _, line := range []string{"X-CuStom-Case: Value", "x-lower: v"} {
				if !strings.Contains(head, "\r\n"+line+"\r\n") {
					t.Errorf("%q not forwarded as spelled:\n%s", line, head)
				}
			}
		})
	}
}

// TestHTTPClientConnectionClose: the client's "Connection: close" is not
// forwarded, but it still ends the client's connection after the answer.
func TestHTTPClientConnectionClose(t *testing.T) {
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	gw := gatewayFor(t, up)
	c, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client conn left open after Connection: close (read %d, %v)", n, err)
	}
}

func TestHTTPServerSentEvents(t *testing.T) {
	t.Parallel()
	// The upstream sends each event only once the client has the one
	// before: a proxy that held the stream back until the response ended
	// would leave it waiting.
	arrived := make(chan struct{}, 10)
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		fl := w.(http.Flusher)
		for i := 1; i <= 10; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			fl.Flush()
			if i < 10 {
				select {
				case <-arrived:
				case <-time.After(10 * time.Second):
					t.Errorf("event %d not at the client 10s after it was sent: events were not streamed", i)
					return
				case <-r.Context().Done():
					return
				}
			}
		}
	}))
	gw := gatewayFor(t, up)
	resp, err := httpClient(t).Get("http://" + gw + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	for i := 1; i <= 10; i++ {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := fmt.Sprintf("data: %d\n", i); line != want {
			t.Fatalf("event %d: got %q, want %q", i, line, want)
		}
		if blank, _ := br.ReadString('\n'); blank != "\n" {
			t.Fatalf("event %d not followed by a blank line: %q", i, blank)
		}
		arrived <- struct{}{}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Errorf("after the last event: %q, %v", rest, err)
	}
}

// holdingUpstream answers GETs after holding them for hold, counting the
// requests it receives.
func holdingUpstream(t *testing.T, hold time.Duration, count *atomic.Int32) string {
	return serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count.Add(1)
		select {
		case <-time.After(hold):
			io.WriteString(w, "news")
		case <-r.Context().Done():
		}
	}))
}

func TestHTTPLongPoll(t *testing.T) {
	t.Parallel()
	var count atomic.Int32
	gw := gatewayFor(t, holdingUpstream(t, 5*time.Second, &count))
	start := time.Now()
	resp, err := httpClient(t).Get("http://" + gw + "/poll")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != 200 || body != "news" {
		t.Errorf("status %d body %q after %v", resp.StatusCode, body, time.Since(start))
	}
	if n := count.Load(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}

// TestHTTPLongPollPastIdleTimeout: an upstream silent for longer than the
// idle timeout gets 504, and the GET is not sent again (fasthttp retries
// idempotent requests on timeouts unless told not to).
func TestHTTPLongPollPastIdleTimeout(t *testing.T) {
	t.Parallel()
	var count atomic.Int32
	// The upstream would answer only long after the idle timeout.
	cfg := configFor(holdingUpstream(t, time.Minute, &count))
	cfg.Timeouts.Idle = config.Duration(time.Second)
	gw := startGateway(t, cfg).Addrs()[0].String()
	start := time.Now()
	resp, err := httpClient(t).Get("http://" + gw + "/poll")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	elapsed := time.Since(start)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d body %q, want 504", resp.StatusCode, body)
	}
	if elapsed < 900*time.Millisecond || elapsed > 10*time.Second {
		t.Errorf("answered after %v, want about the 1 s idle timeout", elapsed)
	}
	time.Sleep(300 * time.Millisecond) // a retry would have arrived by now
	if n := count.Load(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}

func TestHTTPAllServersDown(t *testing.T) {
	cfg := configFor(deadAddress(t), deadAddress(t))
	cfg.Timeouts.Connect = config.Duration(30 * time.Second) // a refusal that waited for it would show
	gw := startGateway(t, cfg).Addrs()[0].String()
	start := time.Now()
	resp, err := httpClient(t).Get("http://" + gw + "/")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "could be reached") {
		t.Errorf("status %d body %q, want 502 with a reason", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("502 took %v", d)
	}
}

func TestHTTPOneServerDown(t *testing.T) {
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	gw := gatewayFor(t, deadAddress(t), up)
	cl := httpClient(t)
	for i := range 50 {
		resp, err := cl.Get("http://" + gw + "/")
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, resp); resp.StatusCode != 200 || body != "up" {
			t.Fatalf("GET %d: status %d body %q", i, resp.StatusCode, body)
		}
	}
}

// closingUpstream accepts connections, reads a little and closes them
// without answering; it counts the connections.
func closingUpstream(t *testing.T, conns *atomic.Int32) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.SetReadDeadline(time.Now().Add(time.Second))
			c.Read(make([]byte, 4096))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestHTTPUpstreamClosesWithoutAnswer(t *testing.T) {
	var conns atomic.Int32
	gw := gatewayFor(t, closingUpstream(t, &conns))
	cl := httpClient(t)
	resp, err := cl.Get("http://" + gw + "/")
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("GET: status %d body %q, want 502", resp.StatusCode, body)
	}
	// A GET may be tried once more; more would hammer a crashing upstream.
	if n := conns.Load(); n < 1 || n > 2 {
		t.Errorf("GET reached the upstream %d times", n)
	}
	// A POST is never sent twice: the upstream may have acted on it.
	conns.Store(0)
	resp, err = cl.Post("http://"+gw+"/", "text/plain", strings.NewReader("charge card"))
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("POST: status %d body %q, want 502", resp.StatusCode, body)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("POST reached the upstream %d times, want 1", n)
	}
}

func TestHTTPUnknownRoute(t *testing.T) {
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ws.repo") }))
	cfg := configFor(up)
	cfg.Routes = []config.Route{{Host: "ws.repo", Path: "/", Upstream: "backend"}}
	gw := startGateway(t, cfg).Addrs()[0].String()
	cl := httpClient(t)

	req, _ := http.NewRequest("GET", "http://"+gw+"/x", nil)
	req.Host = "ws.repo"
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 || body != "ws.repo" {
		t.Fatalf("routed host: status %d body %q", resp.StatusCode, body)
	}

	req.Host = "other.test"
	resp, err = cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "no route for host other.test") {
		t.Errorf("status %d body %q, want 404 naming the host", resp.StatusCode, body)
	}
}

func TestHTTPKeepAliveReuse(t *testing.T) {
	var newConns atomic.Int32
	gw := gatewayFor(t, serveQueryEcho(t, listenLocal(t), &newConns))
	sequentialGets(t, gw, 200)
	if n := newConns.Load(); n > 3 {
		t.Errorf("upstream saw %d connections for 200 sequential requests, want <= 3", n)
	}
}

// serveQueryEcho serves on ln, until the test ends, an upstream that
// answers each request with its query and counts the connections it is
// served on; it returns ln's address.
func serveQueryEcho(t *testing.T, ln net.Listener, conns *atomic.Int32) string {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.URL.RawQuery) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// sequentialGets sends n GETs one after another on one client connection
// to the gateway at gw, each checked to get its own query back.
func sequentialGets(t *testing.T, gw string, n int) {
	t.Helper()
	c := dialRaw(t, gw, 20*time.Second)
	br := bufio.NewReader(c)
	for i := range n {
		fmt.Fprintf(c, "GET /?n=%d HTTP/1.1\r\nHost: gw.test\r\n\r\n", i)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if body := readAll(t, resp); resp.StatusCode != 200 || body != fmt.Sprintf("n=%d", i) {
			t.Fatalf("request %d: status %d body %q", i, resp.StatusCode, body)
		}
	}
}

// TestHTTPHeadAndNoContent: bodiless answers keep their headers, and the
// connection stays usable (a HEAD's Content-Length announces no bytes).
func TestHTTPHeadAndNoContent(t *testing.T) {
	up := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "1234")
			if r.Method != http.MethodHead {
				w.Write(make([]byte, 1234))
			}
		}
	}))
	gw := gatewayFor(t, up)
	c := dialRaw(t, gw, 5*time.Second)
	br := bufio.NewReader(c)
	for _, r := range []struct {
		method, path string
		status       int
		length       string
		bodyLen      int
	}{
		{"HEAD", "/", 200, "1234", 0},
		{"GET", "/204", 204, "", 0},
		{"GET", "/304", 304, "", 0},
		{"GET", "/", 200, "1234", 1234},
	} {
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: gw.test\r\n\r\n", r.method, r.path)
		resp, err := http.ReadResponse(br, &http.Request{Method: r.method})
		if err != nil {
			t.Fatalf("%s %s: %v", r.method, r.path, err)
		}
		body := readAll(t, resp)
		if resp.StatusCode != r.status || resp.Header.Get("Content-Length") != r.length || len(body) != r.bodyLen {
			t.Errorf("%s %s: status %d Content-Length %q body %d bytes; want %d %q %d",
				r.method, r.path, resp.StatusCode, resp.Header.Get("Content-Length"), len(body), r.status, r.length, r.bodyLen)
		}
	}
}

// A server that dies with kept-alive connections in the gateway's pool:
// every stale connection fails the same way, and a GET that meets one goes
// to the other server instead of answering 502.
func TestDeadServerStaleConnsFailOver(t *testing.T) {
	release := make(chan struct{})
	var dying *http.Server
	dyingLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held atomic.Int32
	dying = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held.Add(1)
			<-release
		}
		io.WriteString(w, "dying")
	})}
	go dying.Serve(dyingLn)
	defer dying.Close()
	alive := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "alive") }))

	cfg := configFor(dyingLn.Addr().String(), alive)
	cfg.Upstreams["backend"].Balance = "round_robin"
	zero := 0
	cfg.Upstreams["backend"].MaxFails = &zero // keep the dead server in rotation: every request may meet it
	cfg.ApplyDefaults()
	addr := startGateway(t, cfg).Addrs()[0].String()

	// Fill the gateway's pool for the dying server with idle conns: eight
	// requests held at once, then answered.
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := http.Get("http://" + addr + "/hold"); err == nil {
				resp.Body.Close()
			}
		}()
	}
	waitFor(t, "eight requests held by the dying server", func() bool { return held.Load() >= 8 })
	close(release)
	wg.Wait()
	dying.Close() // closes its listener and every idle conn: the pool is stale

	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 20 {
		resp, err := client.Get("http://" + addr + "/after")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "alive" {
			t.Fatalf("request %d after the server died: %d %q", i, resp.StatusCode, body)
		}
	}
}

// The HTTP clients of servers that left their pool (DNS churn) are
// forgotten once nothing is in flight on them; live servers keep theirs.
func TestClientsOfRemovedServersAreForgotten(t *testing.T) {
	clients := newHostClients(clientSettings{})
	a := upstream.NewServer("127.0.0.1:1001", upstream.Settings{})
	b := upstream.NewServer("127.0.0.1:1002", upstream.Settings{})
	pool, err := upstream.NewPool("p", []*upstream.Server{a, b}, upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hcA := clients.get(a)
	clients.get(b)
	if clients.get(a) != hcA {
		t.Fatal("a server got a second client")
	}
	b.Acquire() // a request in flight on b
	pool.SetServers([]*upstream.Server{upstream.NewServer("127.0.0.1:1003", upstream.Settings{})})
	c := pool.Servers()[0]
	clients.get(c)
	if _, ok := clients.m[a]; ok {
		t.Error("the client of a removed idle server is kept")
	}
	if _, ok := clients.m[b]; !ok {
		t.Error("the client of a removed server with a request in flight was dropped")
	}
	b.Release()
	pool.SetServers([]*upstream.Server{upstream.NewServer("127.0.0.1:1004", upstream.Settings{})})
	clients.get(pool.Servers()[0])
	if len(clients.m) != 1 {
		t.Errorf("%d clients left, want 1", len(clients.m))
	}
}
