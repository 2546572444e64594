// Package e2e runs wsgate in front of the realtime stacks people put behind
// it (Tornado, node ws, long-poll, Socket.IO, SockJS), each a small server of
// our own written with the real library, with headless Chromium as the
// client where the client is a page, and two wsgates behind HAProxy. Peers come from tests/e2e/setup.sh;
// a missing peer fails the test with the setup step to run instead of
// skipping, so CI cannot pass by testing nothing.
package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/syncbuf"
	"github.com/wsgate/wsgate/internal/testport"
	"github.com/wsgate/wsgate/internal/wsgatebin"
)

var (
	// binary is the wsgate built once by TestMain.
	binary string
	// e2eDir is tests/e2e, the test's working directory: browser.js,
	// apps/ and node_modules/ are found from here.
	e2eDir string
)

// chromiumPath is the Debian package's browser; browser.js launches exactly
// this file.
const chromiumPath = "/usr/bin/chromium"

// systemPython is Debian's interpreter: the python3 first on PATH may be a
// pyenv one that does not see python3-tornado.
const systemPython = "/usr/bin/python3"

// haproxyPath is the Debian package's HAProxy, the L4 balancer that
// fleet_test.go puts in front of two wsgates.
const haproxyPath = "/usr/sbin/haproxy"

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

// buildAndRun is TestMain's body in a function of its own so that the
// deferred removal of the build directory runs before os.Exit.
func buildAndRun(m *testing.M) int {
	dir, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	e2eDir = dir
	_, bin, cleanup, err := wsgatebin.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer cleanup()
	binary = bin
	defer stopSharedPeers()
	return m.Run()
}

var (
	peersOnce sync.Once
	peersErr  string
)

// requirePeers fails the test (it does not skip) when a peer the suite
// needs is missing, naming the setup step that installs it. The check runs
// once per test binary.
func requirePeers(t *testing.T) {
	t.Helper()
	peersOnce.Do(func() { peersErr = checkPeers() })
	if peersErr != "" {
		t.Fatalf("e2e peers missing: %s\nrun: bash tests/e2e/setup.sh (from the repository root)", peersErr)
	}
}

func checkPeers() string {
	var missing []string
	if _, err := os.Stat(chromiumPath); err != nil {
		missing = append(missing, chromiumPath+" (Debian package chromium)")
	}
	if out, err := exec.Command(systemPython, "-c", "import tornado").CombinedOutput(); err != nil {
		missing = append(missing, fmt.Sprintf("%s with tornado (Debian package python3-tornado): %v %s", systemPython, err, strings.TrimSpace(string(out))))
	}
	if _, err := os.Stat(haproxyPath); err != nil {
		missing = append(missing, haproxyPath+" (Debian package haproxy)")
	}
	if _, err := exec.LookPath("node"); err != nil {
		missing = append(missing, "node (Debian package nodejs)")
	}
	for _, mod := range []string{"playwright-core", "ws", "socket.io", "socket.io-client", "sockjs", "sockjs-client"} {
		if _, err := os.Stat(filepath.Join(e2eDir, "node_modules", mod, "package.json")); err != nil {
			missing = append(missing, "tests/e2e/node_modules/"+mod+" (npm ci in tests/e2e)")
		}
	}
	return strings.Join(missing, "; ")
}

// proc is a running subprocess: wsgate or a peer.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *syncbuf.Buffer
	done           chan struct{} // closed when the process has exited
	waitErr        error         // cmd.Wait's result, set before done closes
}

// startProc starts name with args in dir, in a process group of its own so
// that Kill also takes its children (Chromium under node). It is killed at
// the end of the test if still running, and its output is logged if the
// test failed.
func startProc(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, nil, dir, name, args...)
}

// startProcEnv is startProc with env (KEY=VALUE) added to the test's own
// environment.
func startProcEnv(t *testing.T, env []string, dir, name string, args ...string) *proc {
	t.Helper()
	p, err := newProc(env, dir, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill(t)
		if t.Failed() {
			t.Logf("%s\n--- stdout:\n%s--- stderr:\n%s", p.name, p.stdout, p.stderr)
		}
	})
	return p
}

// newProc starts name with args in dir, with env (KEY=VALUE) added to the
// test's own environment, in a process group of its own. Nothing ends it:
// that is the caller's job (startProcEnv ties it to a test, sharedPeer to
// the test binary).
func newProc(env []string, dir, name string, args ...string) (*proc, error) {
	p := &proc{
		name:   filepath.Base(name) + " " + strings.Join(args, " "),
		cmd:    exec.Command(name, args...),
		stdout: &syncbuf.Buffer{},
		stderr: &syncbuf.Buffer{},
		done:   make(chan struct{}),
	}
	p.cmd.Dir = dir
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %v", p.name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Kill ends the process and its process group with SIGKILL and waits for
// it; killing an already finished process is a no-op.
func (p *proc) Kill(t *testing.T) {
	t.Helper()
	if err := p.kill(); err != nil {
		t.Error(err)
	}
}

// kill is Kill without a test, for the peers shared by the whole binary.
func (p *proc) kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	// A negative pid names the process group set up by newProc.
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) did not die after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// Exited reports whether the process has ended.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// sharedPeers are the peers started once per test binary by sharedPeer,
// by key, and killed by TestMain after the last test.
var (
	sharedMu    sync.Mutex
	sharedPeers = map[string]*sharedProc{}
)

type sharedProc struct {
	once sync.Once
	p    *proc
	port int
	err  error
}

// sharedPeer returns the peer known as key and its port, starting it on
// first use: `name args(port)...` run in tests/e2e on a free 127.0.0.1
// port, up once it accepts there. Tests that can share a peer (its state
// kept apart by what they send it, such as distinct Tornado Ids) do, so
// that each peer starts once per test binary. The peer outlives the test
// that started it; its output is logged by every test using it that fails.
func sharedPeer(t *testing.T, key, name string, args func(port int) []string) (*proc, int) {
	t.Helper()
	sharedMu.Lock()
	sp := sharedPeers[key]
	if sp == nil {
		sp = &sharedProc{}
		sharedPeers[key] = sp
	}
	sharedMu.Unlock()
	sp.once.Do(func() {
		// No t.Fatal in here: a Goexit inside Do would leave the peer
		// "started" with no process for every later test.
		sp.port, sp.err = testport.Free()
		if sp.err != nil {
			return
		}
		sp.p, sp.err = newProc(nil, e2eDir, name, args(sp.port)...)
		if sp.err == nil {
			sp.err = waitPortErr(sp.p, sp.port, 15*time.Second)
		}
	})
	if sp.err != nil {
		t.Fatalf("shared peer %s: %v", key, sp.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("shared peer %s\n--- stdout:\n%s--- stderr:\n%s", sp.p.name, sp.p.stdout, sp.p.stderr)
		}
	})
	if sp.p.Exited() {
		t.Fatalf("shared peer %s exited: %v", sp.p.name, sp.p.waitErr)
	}
	return sp.p, sp.port
}

// stopSharedPeers kills the peers sharedPeer started.
func stopSharedPeers() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	for key, sp := range sharedPeers {
		if sp.p == nil {
			continue
		}
		if err := sp.p.kill(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: shared peer %s: %v\n", key, err)
		}
	}
}

// freePort returns a 127.0.0.1 port for a server the test starts
// (testport: outside the kernel's ephemeral range, never handed out twice).
func freePort(t *testing.T) int {
	t.Helper()
	port, err := testport.Free()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// waitPort waits until something accepts TCP connections on 127.0.0.1:port,
// failing the test after d or as soon as p (if not nil) exits, because a
// peer that crashed at startup will never listen.
func waitPort(t *testing.T, p *proc, port int, d time.Duration) {
	t.Helper()
	if err := waitPortErr(p, port, d); err != nil {
		t.Fatal(err)
	}
}

// waitPortErr is waitPort returning its failure.
func waitPortErr(p *proc, port int, d time.Duration) error {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited before listening on %s: %v\n--- stdout:\n%s--- stderr:\n%s", p.name, addr, p.waitErr, p.stdout, p.stderr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %v: %v", addr, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startWsgate writes config (YAML) to a file and runs wsgate with it, then
// waits until it accepts on port, the port its listener was given in config.
func startWsgate(t *testing.T, port int, config string) *proc {
	t.Helper()
	file := filepath.Join(t.TempDir(), "wsgate.yaml")
	if err := os.WriteFile(file, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, t.TempDir(), binary, "-config", file)
	waitPort(t, p, port, 10*time.Second)
	return p
}

// startNode runs `node script args...` from tests/e2e (script is relative
// to it, e.g. apps/ws/server.js) and waits until it accepts on port.
func startNode(t *testing.T, port int, script string, args ...string) *proc {
	t.Helper()
	p := startProc(t, e2eDir, "node", append([]string{script}, args...)...)
	waitPort(t, p, port, 15*time.Second)
	return p
}

// browserTimeout is the longest one runBrowser may take; browser.js has the
// same limit inside (E2E_BROWSER_TIMEOUT_MS) and this is the backstop.
const browserTimeout = 60 * time.Second

// browserOpts are runBrowserOpts's settings; the zero value is runBrowser's.
type browserOpts struct {
	// Timeout is the overall limit; 0 is browserTimeout.
	Timeout time.Duration
	// TrustSPKI are base64 SHA-256 hashes of the SubjectPublicKeyInfo of
	// the test certificates Chromium is to accept (testCert.SPKIHash),
	// passed to browser.js as --trust-spki.
	TrustSPKI []string
}

// runBrowser runs `node browser.js script args...` in tests/e2e: headless
// /usr/bin/chromium loads the scenario module script (a path relative to
// tests/e2e, exporting `async (page, args) => result`) and the scenario's
// result is returned as the JSON line browser.js prints. Any failure of the
// scenario fails the test with the browser's log.
func runBrowser(t *testing.T, script string, args ...string) string {
	t.Helper()
	return runBrowserOpts(t, browserOpts{}, script, args...)
}

// runBrowserOpts is runBrowser with a limit other than 60 s or with test
// certificates to trust.
func runBrowserOpts(t *testing.T, o browserOpts, script string, args ...string) string {
	t.Helper()
	requirePeers(t)
	limit := o.Timeout
	if limit == 0 {
		limit = browserTimeout
	}
	start := time.Now()
	env := []string{fmt.Sprintf("E2E_BROWSER_TIMEOUT_MS=%d", limit.Milliseconds())}
	argv := []string{"browser.js"}
	for _, h := range o.TrustSPKI {
		argv = append(argv, "--trust-spki="+h)
	}
	argv = append(append(argv, script), args...)
	p := startProcEnv(t, env, e2eDir, "node", argv...)
	select {
	case <-p.done:
	case <-time.After(limit + 10*time.Second):
		p.Kill(t)
		t.Fatalf("browser %s did not finish in %v\n--- stderr:\n%s", script, limit, p.stderr)
	}
	if p.waitErr != nil {
		t.Fatalf("browser %s failed after %v: %v\n--- stdout:\n%s--- stderr:\n%s", script, time.Since(start).Round(time.Millisecond), p.waitErr, p.stdout, p.stderr)
	}
	out := strings.TrimSpace(p.stdout.String())
	// The result is the last line; anything a scenario printed before it
	// with console.log is not part of it.
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	t.Logf("browser %s: %v", script, time.Since(start).Round(time.Millisecond))
	return out
}
