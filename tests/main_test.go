// Package tests holds end-to-end tests: they build the real wsgate binary
// once and run it as a subprocess against real peers on 127.0.0.1, so what
// they check is what a user gets (flags, exit codes, signals, logs), not
// what a Go caller of package proxy gets.
package tests

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/wsgate/wsgate/internal/syncbuf"
	"github.com/wsgate/wsgate/internal/testport"
	"github.com/wsgate/wsgate/internal/wsgatebin"
)

var (
	// binary is the wsgate built by TestMain.
	binary string
	// moduleRoot is the directory holding go.mod; the example config's
	// relative paths are resolved from there.
	moduleRoot string
)

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

// buildAndRun is TestMain's body in a function of its own so that the
// deferred removal of the build directory runs before os.Exit.
func buildAndRun(m *testing.M) int {
	// go test runs a package's tests in the package's directory.
	root, bin, cleanup, err := wsgatebin.Build(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests:", err)
		return 1
	}
	defer cleanup()
	moduleRoot, binary = root, bin
	return m.Run()
}

// proc is a running wsgate subprocess.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncbuf.Buffer
	done           chan struct{} // closed when the process has exited
	waitErr        error         // cmd.Wait's result, set before done closes
}

// startWsgate starts the binary with args in dir ("" for the test's own
// directory). The process is killed at the end of the test if it is still
// running, and its output is logged if the test failed.
func startWsgate(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	p := &proc{
		cmd:    exec.Command(binary, args...),
		stdout: &syncbuf.Buffer{},
		stderr: &syncbuf.Buffer{},
		done:   make(chan struct{}),
	}
	p.cmd.Dir = dir
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start wsgate: %v", err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(waitLimit):
				t.Errorf("wsgate pid %d did not die after SIGKILL", p.cmd.Process.Pid)
			}
		}
		if t.Failed() {
			t.Logf("wsgate %s\n--- stdout:\n%s--- stderr:\n%s", strings.Join(args, " "), p.stdout, p.stderr)
		}
	})
	return p
}

// runWsgate runs the binary to completion, for the modes that exit by
// themselves (-check, -version, startup failures).
func runWsgate(t *testing.T, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := startWsgate(t, dir, args...)
	code = p.wait(t, 10*time.Second)
	return code, p.stdout.String(), p.stderr.String()
}

// wait returns the exit code, failing the test if the process is still
// running after d.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("wsgate still running after %s", d)
	}
	var ee *exec.ExitError
	if p.waitErr != nil && !errors.As(p.waitErr, &ee) {
		t.Fatalf("wait for wsgate: %v", p.waitErr)
	}
	return p.cmd.ProcessState.ExitCode()
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("send %v: %v", sig, err)
	}
}

// waitOutput polls buf until it contains want; a process that exits
// without writing it fails at once rather than at the deadline.
func (p *proc) waitOutput(t *testing.T, buf *syncbuf.Buffer, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(buf.String(), want) {
		if p.exited() && !strings.Contains(buf.String(), want) {
			t.Fatalf("wsgate exited (%v) without printing %q", p.waitErr, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("wsgate did not print %q within %s", want, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLimit bounds the waits for the gateway process, its peers and its
// connections. It is a backstop, not a measure of speed: CI runs every
// package at once under -race on two cores, where a step that takes
// milliseconds alone can take seconds.
const waitLimit = 10 * time.Second

// eventually polls cond every 10 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freeAddr returns a 127.0.0.1 address for a gateway the test starts; the
// config rejects port 0 (testport: outside the kernel's ephemeral range,
// never handed out twice).
func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := testport.Free()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// writeConfig writes text to a config file in a fresh temp dir.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "wsgate.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startGateway runs wsgate with the config text, which must listen on addr,
// and returns once it has bound.
func startGateway(t *testing.T, addr, text string) *proc {
	t.Helper()
	p := startWsgate(t, "", "-config", writeConfig(t, text))
	p.waitOutput(t, p.stderr, "listening on "+addr, 10*time.Second)
	return p
}

// echoUpstream is a WebSocket server that echoes every message back.
func echoUpstream(t *testing.T) string {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade has answered the client
		}
		defer c.Close()
		for {
			mt, data, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, data); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// httpUpstream is a plain HTTP server that says which host and path it saw.
func httpUpstream(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "plain upstream: host=%s path=%s", r.Host, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// dialWS opens a WebSocket through the gateway at gw. The URL's host goes
// into the Host header while the TCP connection goes to gw, which is how a
// client reaches a name-based route without DNS.
func dialWS(gw, url string) (*websocket.Conn, error) {
	d := websocket.Dialer{
		NetDial: func(string, string) (net.Conn, error) {
			return net.DialTimeout("tcp", gw, waitLimit)
		},
		HandshakeTimeout: waitLimit,
	}
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s via %s: %w (status %s)", url, gw, err, resp.Status)
		}
		return nil, fmt.Errorf("dial %s via %s: %w", url, gw, err)
	}
	return c, nil
}

func mustDialWS(t *testing.T, gw, url string) *websocket.Conn {
	t.Helper()
	c, err := dialWS(gw, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo sends msg and expects it back within a bounded time.
func echo(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(waitLimit))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	c.SetReadDeadline(time.Now().Add(waitLimit))
	_, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read echo of %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
}

// closeWS does the client side of a clean close: send Close, wait for the
// peer's Close (or the end of the connection), then close the socket.
func closeWS(t *testing.T, c *websocket.Conn) {
	t.Helper()
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
	if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(waitLimit)); err != nil {
		t.Fatalf("send close: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(waitLimit))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no close reply within %s", waitLimit)
			}
			break
		}
	}
	c.Close()
}

// httpGet sends GET url to the gateway at gw with the given Host header,
// on a connection of its own.
func httpGet(t *testing.T, gw, host, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+gw+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	client := &http.Client{
		Timeout:   waitLimit,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", path, host, err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		t.Fatalf("GET %s (Host %s): read body: %v", path, host, err)
	}
	return resp.StatusCode, body.String()
}
