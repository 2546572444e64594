package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// logrotate's way: the access log file is renamed while requests flow,
// SIGUSR1 makes wsgate open the path again, and every request's line is
// in the old file or the new one, exactly once.
func TestSIGUSR1ReopensLogFiles(t *testing.T) {
	t.Parallel()
	web := httpUpstream(t)
	gw := freeAddr(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	p := startGateway(t, gw, fmt.Sprintf(`listeners: [{address: %q}]
routes: [{upstream: web}]
upstreams: {web: {servers: [{address: %q}]}}
access_log: {path: %s, format: json}
`, gw, web, logPath))

	// Workers send requests, each with an id in its path, until stopped
	// (at most maxPerWorker each).
	const workers, maxPerWorker = 4, 5000
	transport := &http.Transport{MaxIdleConnsPerHost: workers}
	defer transport.CloseIdleConnections()
	client := &http.Client{Timeout: waitLimit, Transport: transport}
	var (
		done    atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		mu      sync.Mutex
		sent    = map[string]bool{}
		failure error
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range maxPerWorker {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				resp, err := client.Get("http://" + gw + "/r/" + id)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				mu.Lock()
				if err != nil && failure == nil {
					failure = fmt.Errorf("request %s: %w", id, err)
				}
				sent[id] = err == nil
				mu.Unlock()
				if err != nil {
					return
				}
				done.Add(1)
			}
		}()
	}
	stopWorkers := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopWorkers()
	waitDone := func(n int64) {
		eventually(t, 3*waitLimit, fmt.Sprintf("%d requests answered", n), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return done.Load() >= n || failure != nil
		})
	}

	waitDone(200)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGUSR1)
	p.waitOutput(t, p.stderr, "log files reopened", waitLimit)
	waitDone(done.Load() + 200)
	stopWorkers()
	mu.Lock()
	defer mu.Unlock()
	if failure != nil {
		t.Fatal(failure)
	}
	p.signal(t, syscall.SIGTERM) // the exit writes every line queued
	if code := p.wait(t, waitLimit); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}

	seen := map[string]int{}
	for _, name := range []string{logPath + ".1", logPath} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		t.Logf("%s: %d lines", filepath.Base(name), len(lines))
		if len(data) == 0 {
			t.Fatalf("%s is empty", name)
		}
		for _, l := range lines {
			var m struct{ Path string }
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%s: line is not JSON (%v): %q", name, err, l)
			}
			seen[strings.TrimPrefix(m.Path, "/r/")]++
		}
	}
	for id, ok := range sent {
		if ok && seen[id] != 1 {
			t.Errorf("request %s is logged %d times, want once", id, seen[id])
		}
	}
	if len(seen) != len(sent) {
		t.Errorf("%d requests answered, %d logged", len(sent), len(seen))
	}
}
