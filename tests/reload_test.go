package tests

import (
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// withRoute is routedConfig plus a route for host extra.example.org to the
// plain upstream, and the admin listener on admin.
func withRoute(gw, wsAddr, httpAddr, admin string, extraRoute bool) string {
	extra := "admin:\n  address: " + admin + "\n"
	text := routedConfig(gw, wsAddr, httpAddr, extra)
	if extraRoute {
		text = strings.Replace(text, "upstreams:\n", "  - host: added.example.org\n    upstream: web\nupstreams:\n", 1)
	}
	return text
}

// SIGHUP reloads the file in place: the route it adds answers without a
// restart (the test measures how long after the signal), the tunnel opened
// before keeps echoing, and the process logs the reload.
func TestSIGHUPReloadsInPlace(t *testing.T) {
	t.Parallel()
	wsAddr, httpAddr := echoUpstream(t), httpUpstream(t)
	gw, admin := freeAddr(t), freeAddr(t)
	path := writeConfig(t, withRoute(gw, wsAddr, httpAddr, admin, false))
	p := startWsgate(t, "", "-config", path)
	p.waitOutput(t, p.stderr, "listening on "+gw, waitLimit)
	p.waitOutput(t, p.stderr, "admin on http://"+admin+"/", waitLimit)

	live := mustDialWS(t, gw, "ws://ws.repo/")
	echo(t, live, "before the reload")
	if status, _ := httpGet(t, gw, "added.example.org", "/"); status != 404 {
		t.Fatalf("GET on the route not added yet: %d, want 404", status)
	}
	if err := os.WriteFile(path, []byte(withRoute(gw, wsAddr, httpAddr, admin, true)), 0o644); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	p.signal(t, syscall.SIGHUP)
	var latency time.Duration
	eventually(t, waitLimit, "the added route answering", func() bool {
		status, _ := httpGet(t, gw, "added.example.org", "/x")
		latency = time.Since(sent)
		return status == 200
	})
	t.Logf("SIGHUP to the added route answering: %v", latency)
	p.waitOutput(t, p.stderr, "reload 1: ok: routes +1 -0, pools +0 -0, servers +0 -0, listeners +0 -0", waitLimit)
	echo(t, live, "after the reload")
	closeWS(t, live)

	// A broken file: POST /reload answers 400 naming the line; the
	// gateway goes on with what it had.
	if err := os.WriteFile(path, []byte(withRoute(gw, wsAddr, httpAddr, admin, true)+"timeouts:\n  idle: soon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+admin+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), path+":20: timeouts.idle") {
		t.Fatalf("POST /reload of a broken file: %d %q", resp.StatusCode, body)
	}
	p.waitOutput(t, p.stderr, "reload 2: failed; the configuration in service is unchanged", waitLimit)
	if status, _ := httpGet(t, gw, "added.example.org", "/x"); status != 200 {
		t.Fatalf("after the refused reload: %d", status)
	}

	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, waitLimit); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
}

// With -watch, a change of the file's content is reloaded without a
// signal, also when the file is replaced by a symlink swap as a
// Kubernetes ConfigMap update does.
func TestWatchReloadsOnChange(t *testing.T) {
	t.Parallel()
	wsAddr, httpAddr := echoUpstream(t), httpUpstream(t)
	gw, admin := freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	// ConfigMap layout: wsgate.yaml -> ..data/wsgate.yaml, ..data -> a
	// versioned directory, swapped by renaming a new symlink over it.
	version := func(name, text string) {
		if err := os.Mkdir(dir+"/"+name, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/"+name+"/wsgate.yaml", []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(name, dir+"/..data_tmp"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dir+"/..data_tmp", dir+"/..data"); err != nil {
			t.Fatal(err)
		}
	}
	version("v1", withRoute(gw, wsAddr, httpAddr, admin, false))
	if err := os.Symlink("..data/wsgate.yaml", dir+"/wsgate.yaml"); err != nil {
		t.Fatal(err)
	}
	p := startWsgate(t, "", "-watch", "-config", dir+"/wsgate.yaml")
	p.waitOutput(t, p.stderr, "listening on "+gw, waitLimit)
	live := mustDialWS(t, gw, "ws://ws.repo/")

	version("v2", withRoute(gw, wsAddr, httpAddr, admin, true))
	p.waitOutput(t, p.stderr, "reload 1: ok: routes +1 -0", waitLimit)
	if status, _ := httpGet(t, gw, "added.example.org", "/x"); status != 200 {
		t.Fatalf("GET on the added route after the swap: %d", status)
	}
	echo(t, live, "after the swap")
	closeWS(t, live)
}

// -demo has no file: SIGHUP says there is nothing to reload and the demo
// keeps serving.
func TestSIGHUPInDemo(t *testing.T) {
	t.Parallel()
	gw := freeAddr(t)
	p := startWsgate(t, "", "-demo", "-listen", gw)
	p.waitOutput(t, p.stderr, "listening on "+gw, waitLimit)
	p.signal(t, syscall.SIGHUP)
	p.waitOutput(t, p.stderr, "SIGHUP: no configuration file to reload", waitLimit)
	if status, _ := httpGet(t, gw, "localhost", "/"); status != 200 {
		t.Fatalf("demo page after SIGHUP: %d", status)
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, waitLimit); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
}
