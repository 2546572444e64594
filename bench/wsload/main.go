// Command wsload is wsgate's WebSocket load generator and echo peer, used by
// bench/run.sh (`make bench`) and bench/tunnel-cost.sh. Every measuring mode
// prints exactly one JSON object on stdout (also when it fails: then with an
// "error" key, and the exit status is 1), so a harness can collect results
// line by line without parsing prose.
//
//	wsload -mode server -listen 127.0.0.1:9001                  echo server; also GET /hello -> "hello"
//	wsload -mode server -listen 127.0.0.1:9443 -tls-ca ca.pem   the same over TLS; writes the CA that signs its certificate
//	wsload -mode echo -url ws://H/ -conns 64 -size 64 -duration 3s       round trips/s, p50, p99
//	wsload -mode bulk -url ws://H/ -conns 4 -size 1048576 -duration 3s   MB/s each way
//	wsload -mode handshake -url ws://H/ -conns 16 -duration 3s           open, one echo, close; per second
//	wsload -mode hold -url ws://H/ -conns 9000 -size 32768 -pids 123,456 idle tunnels: survivors, RSS per tunnel
//	wsload -mode wait -url ws://H/ -timeout 10s                          until one WS echo and GET /hello work
//	wsload -mode cpu -pids 123                                           CPU seconds used so far, one line
//	wsload -mode ports -n 4                                              free 127.0.0.1 ports, one line
//
// With -pids, echo, bulk and handshake also report "proxy_cpu_s": the CPU
// time (user + system, all threads) that those processes and their
// descendants spent during the measurement, read from /proc/PID/stat before
// and after it. A wss:// URL is measured over TLS 1.3 with X25519 and no
// session resumption (a full handshake every time); -insecure skips the
// certificate check, -ca trusts a CA instead.
//
// -target, -run and -workload are copied into the JSON so a report can group
// measurements. Every mode is bounded: by -duration, or by -conns and -hold.
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
)

// labels are copied into every result line.
type labels struct {
	target, workload string
	run              int
}

func main() {
	mode := flag.String("mode", "echo", "server | echo | bulk | handshake | hold | wait | cpu | ports")
	listen := flag.String("listen", "127.0.0.1:9001", "server: listen address")
	tlsCA := flag.String("tls-ca", "", "server: speak TLS with a certificate for 127.0.0.1 made now, and write its CA (PEM) to this file")
	url := flag.String("url", "ws://127.0.0.1:8080/", "WebSocket URL to measure")
	clientCA := flag.String("ca", "", "clients of a wss:// URL: trust the CA certificate (PEM) in this file")
	insecure := flag.Bool("insecure", false, "clients of a wss:// URL: do not check the certificate (a benchmark's self-signed one)")
	conns := flag.Int("conns", 64, "echo, bulk: connections; handshake: workers; hold: tunnels")
	size := flag.Int("size", 64, "echo, bulk, hold: message size in bytes")
	duration := flag.Duration("duration", 3*time.Second, "echo, bulk, handshake: how long to measure")
	pids := flag.String("pids", "", "hold: pids whose RSS is summed; echo, bulk, handshake, cpu: whose CPU time is summed (comma-separated, children included)")
	hold := flag.Duration("hold", 2*time.Second, "hold: how long the tunnels stay idle before they are pinged")
	settle := flag.Duration("settle", 3*time.Second, "hold: wait after closing every tunnel before the last RSS reading")
	parallel := flag.Int("parallel", 32, "hold: concurrent dials and pings")
	timeout := flag.Duration("timeout", 10*time.Second, "wait: give up after this long")
	n := flag.Int("n", 1, "ports: how many")
	target := flag.String("target", "", "label: the proxy measured (direct, wsgate, nginx, haproxy)")
	workload := flag.String("workload", "", "label: workload name (default: the mode)")
	run := flag.Int("run", 0, "label: repetition number")
	flag.Parse()
	if *clientCA != "" {
		pem, err := os.ReadFile(*clientCA)
		clientRoots = x509.NewCertPool()
		if err == nil && !clientRoots.AppendCertsFromPEM(pem) {
			err = fmt.Errorf("%s holds no PEM certificate", *clientCA)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "wsload: -ca:", err)
			os.Exit(2)
		}
	}
	clientInsecure = *insecure

	l := labels{target: *target, workload: *workload, run: *run}
	if l.workload == "" {
		l.workload = *mode
	}
	var res map[string]any
	var err error
	var cpu *cpuMeter
	switch *mode {
	case "echo", "bulk", "handshake":
		if cpu, err = newCPUMeter(*pids); err != nil {
			fmt.Fprintln(os.Stderr, "wsload:", err)
			os.Exit(2)
		}
	}
	switch *mode {
	case "server":
		err = serve(*listen, *tlsCA)
	case "echo":
		res, err = echo(*url, *conns, *size, *duration, cpu)
	case "bulk":
		res, err = bulk(*url, *conns, *size, *duration, cpu)
	case "handshake":
		res, err = handshakes(*url, *conns, *duration, cpu)
	case "hold":
		res, err = holdIdle(*url, *conns, *size, *parallel, *pids, *hold, *settle)
	case "wait":
		err = wait(*url, *timeout)
	case "cpu":
		err = printCPU(*pids)
	case "ports":
		err = freePorts(*n)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if res != nil || (err != nil && *mode != "server" && *mode != "wait" && *mode != "cpu" && *mode != "ports") {
		if res == nil {
			res = map[string]any{}
		}
		res["mode"], res["target"], res["workload"], res["run"] = *mode, l.target, l.workload, l.run
		if err != nil {
			res["error"] = err.Error()
		}
		out, _ := json.Marshal(res)
		fmt.Println(string(out))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(1)
	}
}

// serve echoes every WebSocket message back and answers any other GET with
// "hello" (5 bytes), so the same upstreams serve the plain HTTP test. With
// caFile it speaks TLS (a wss:// and https:// upstream).
func serve(addr, caFile string) error {
	// The write buffer comes from a pool: the hold test parks thousands of
	// connections here, and the echo server's memory is not what we measure.
	up := websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	hello := []byte("hello")
	fmt.Fprintln(os.Stderr, "wsload: echo server on", addr)
	srv := &http.Server{
		Addr:              addr,
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !websocket.IsWebSocketUpgrade(r) {
				w.Header().Set("Content-Type", "text/plain")
				w.Header().Set("Content-Length", "5")
				w.Write(hello)
				return
			}
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetReadLimit(64 << 20)
			for {
				mt, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				if c.WriteMessage(mt, msg) != nil {
					return
				}
			}
		}),
	}
	if caFile == "" {
		return srv.ListenAndServe()
	}
	cert, err := makeServerCert(caFile)
	if err != nil {
		return err
	}
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	return srv.ListenAndServeTLS("", "")
}

// makeServerCert makes a CA, writes it to caFile, and returns a
// certificate for 127.0.0.1 that it signs. Nothing is kept: every run has
// its own.
func makeServerCert(caFile string) (tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wsload bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// clientRoots, from -ca, are what wss:// clients trust (nil: the system's);
// clientInsecure, from -insecure, trusts any certificate.
var (
	clientRoots    *x509.CertPool
	clientInsecure bool
)

// clientTLS is the TLS configuration of every wss:// and https:// client. It
// pins what a TLS benchmark must hold equal across the proxies measured:
// TLS 1.3, the X25519 key exchange (Go would offer a post-quantum hybrid
// first, which Go servers pick and OpenSSL 3.0 servers do not), and a full
// handshake every time (ClientSessionCache nil: session tickets the server
// sends are never used).
func clientTLS() *tls.Config {
	return &tls.Config{
		RootCAs:            clientRoots,
		InsecureSkipVerify: clientInsecure,
		MinVersion:         tls.VersionTLS13,
		CurvePreferences:   []tls.CurveID{tls.X25519},
		ClientSessionCache: nil,
	}
}

// dialer returns a client dialer whose write buffer holds a whole message of
// size bytes, so each message goes out as one frame (as browsers send them)
// instead of being fragmented at the buffer size; the buffer is pooled so
// idle connections do not keep it.
func dialer(size int) *websocket.Dialer {
	return &websocket.Dialer{
		TLSClientConfig:  clientTLS(),
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   4096,
		WriteBufferSize:  max(size+16, 4096),
		WriteBufferPool:  &sync.Pool{},
	}
}

func dialAll(url string, n, size int) ([]*websocket.Conn, error) {
	d := dialer(size)
	cs := make([]*websocket.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, _, err := d.Dial(url, nil)
		if err != nil {
			closeAll(cs)
			return nil, fmt.Errorf("dial %d: %w", i, err)
		}
		c.SetReadLimit(64 << 20)
		cs = append(cs, c)
	}
	return cs, nil
}

func closeAll(cs []*websocket.Conn) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

// echo runs conns clients, each sending a message and waiting for its echo
// in a loop, and reports round trips per second with p50 and p99 latency.
func echo(url string, conns, size int, d time.Duration, cpu *cpuMeter) (map[string]any, error) {
	clients, err := dialAll(url, conns, size)
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	msg := bytes.Repeat([]byte("x"), size)
	lat := make([][]time.Duration, conns)
	errs := make([]error, conns)
	if err := cpu.begin(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat[i] = make([]time.Duration, 0, 1<<14)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					errs[i] = err
					return
				}
				_, got, err := c.ReadMessage()
				if err != nil {
					errs[i] = err
					return
				}
				if len(got) != size {
					errs[i] = fmt.Errorf("echo of %d bytes came back as %d", size, len(got))
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	res := map[string]any{
		"conns": conns, "size": size, "round_trips": len(all), "seconds": elapsed.Seconds(),
		"msgs_per_s": float64(len(all)) / elapsed.Seconds(),
		"p50_us":     quantile(all, 0.50).Microseconds(),
		"p99_us":     quantile(all, 0.99).Microseconds(),
	}
	addTLS(res, clients[0])
	return res, cpu.end(res)
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1))]
}

// bulkWindow is how many messages each bulk connection keeps in flight: two
// keep both directions busy (one message going up while the previous one
// comes back) without piling up megabytes in socket buffers.
const bulkWindow = 2

// bulk sends size-byte messages on conns connections and counts the bytes
// that come back. The echo returns every byte, so the figure holds for each
// direction: MB/s each way.
func bulk(url string, conns, size int, d time.Duration, cpu *cpuMeter) (map[string]any, error) {
	clients, err := dialAll(url, conns, size)
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	msg := bytes.Repeat([]byte("b"), size)
	var received atomic.Int64
	errs := make([]error, 2*conns)
	if err := cpu.begin(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range clients {
		window := make(chan struct{}, bulkWindow)
		sent := make(chan struct{}, bulkWindow)
		wg.Add(2)
		go func() { // writer: stops at the deadline; the reader drains what is in flight
			defer wg.Done()
			defer close(sent)
			for time.Now().Before(deadline) {
				window <- struct{}{}
				c.SetWriteDeadline(time.Now().Add(30 * time.Second))
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					errs[2*i] = err
					return
				}
				sent <- struct{}{}
			}
		}()
		go func() {
			defer wg.Done()
			for range sent {
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, got, err := c.ReadMessage()
				if err != nil {
					errs[2*i+1] = err
					// Close the conn and keep freeing the window until
					// the writer notices (its next write fails) and stops.
					c.Close()
					for {
						select {
						case <-window:
						case _, ok := <-sent:
							if !ok {
								return
							}
						}
					}
				}
				if len(got) != size {
					errs[2*i+1] = fmt.Errorf("echo of %d bytes came back as %d", size, len(got))
				}
				received.Add(int64(len(got)))
				<-window
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	res := map[string]any{
		"conns": conns, "size": size, "bytes_each_way": received.Load(), "seconds": elapsed.Seconds(),
		"mb_per_s": float64(received.Load()) / elapsed.Seconds() / 1e6,
	}
	addTLS(res, clients[0])
	return res, cpu.end(res)
}

// handshakes runs workers that each loop: open a WebSocket, one 64-byte
// echo, Close frame, close the TCP connection. It counts completed cycles.
func handshakes(url string, workers int, d time.Duration, cpu *cpuMeter) (map[string]any, error) {
	dl := dialer(64)
	msg := bytes.Repeat([]byte("h"), 64)
	var done, failed atomic.Int64
	var firstErr atomic.Value
	var tlsSeen sync.Once
	res := map[string]any{}
	cycle := func() error {
		c, _, err := dl.Dial(url, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		tlsSeen.Do(func() { addTLS(res, c) })
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			return err
		}
		if _, got, err := c.ReadMessage(); err != nil {
			return err
		} else if len(got) != len(msg) {
			return fmt.Errorf("echo of %d bytes came back as %d", len(msg), len(got))
		}
		// A Close frame first, as a well-behaved client does; no wait for
		// the reply, which would only measure the echo server's close path.
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		return nil
	}
	if err := cpu.begin(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := cycle(); err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
					// Give up after many failures: the figure would be
					// meaningless and a broken target must not stall the run.
					if failed.Add(1) > 1000 {
						return
					}
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res["workers"], res["handshakes"], res["failed"], res["seconds"] = workers, done.Load(), failed.Load(), elapsed.Seconds()
	res["handshakes_per_s"] = float64(done.Load()) / elapsed.Seconds()
	if e := firstErr.Load(); e != nil {
		res["first_error"] = e
	}
	if err := cpu.end(res); err != nil {
		return res, err
	}
	if failed.Load() > done.Load()/100 {
		return res, fmt.Errorf("%d of %d handshakes failed, first: %v", failed.Load(), failed.Load()+done.Load(), firstErr.Load())
	}
	return res, nil
}

// holdIdle opens conns tunnels, sends one size-byte message on each (so the
// proxy's buffers were used once), lets them sit idle, then pings every one
// and counts the pongs. It reports the RSS of the proxy's processes before,
// while holding (per tunnel) and after every tunnel was closed.
func holdIdle(url string, conns, size, parallel int, pidList string, hold, settle time.Duration) (map[string]any, error) {
	pids, err := parsePids(pidList)
	if err != nil {
		return nil, err
	}
	before, err := rssKiB(pids)
	if err != nil {
		return nil, err
	}
	d := dialer(size)
	msg := bytes.Repeat([]byte("i"), size)
	clients := make([]*websocket.Conn, conns)
	var dialFailed atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		firstErr.CompareAndSwap(nil, err.Error())
		dialFailed.Add(1)
	}
	t0 := time.Now()
	forEach(conns, parallel, func(i int) {
		c, _, err := d.Dial(url, nil)
		if err != nil {
			fail(err)
			return
		}
		c.SetReadLimit(64 << 20)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			c.Close()
			fail(err)
			return
		}
		if _, got, err := c.ReadMessage(); err != nil || len(got) != size {
			c.Close()
			fail(fmt.Errorf("first echo: %d bytes, %v", len(got), err))
			return
		}
		c.SetReadDeadline(time.Time{})
		clients[i] = c
	})
	openSeconds := time.Since(t0).Seconds()
	defer closeAll(clients)
	time.Sleep(hold)
	held, err := rssKiB(pids)
	procs := len(withDescendants(pids))
	if err != nil {
		return nil, err
	}
	// A ping is answered by the echo server's WebSocket layer with a pong;
	// the pong handler ends ReadMessage with a sentinel, so a survivor is a
	// tunnel that carried both frames.
	errPong := errors.New("pong")
	var alive atomic.Int64
	forEach(conns, parallel, func(i int) {
		c := clients[i]
		if c == nil {
			return
		}
		c.SetPongHandler(func(string) error { return errPong })
		if c.WriteControl(websocket.PingMessage, []byte("still there?"), time.Now().Add(10*time.Second)) != nil {
			return
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); errors.Is(err, errPong) {
			alive.Add(1)
		}
	})
	opened := conns - int(dialFailed.Load())
	closeAll(clients)
	clients = nil
	time.Sleep(settle)
	closed, err := rssKiB(pids)
	if err != nil {
		return nil, err
	}
	res := map[string]any{
		"conns": conns, "opened": opened, "alive": alive.Load(), "size": size,
		"open_seconds": openSeconds, "hold_seconds": hold.Seconds(),
		"rss_before_kib": before, "rss_held_kib": held, "rss_closed_kib": closed,
		"kib_per_tunnel":   float64(held-before) / float64(max(opened, 1)),
		"closed_vs_before": float64(closed) / float64(max(before, 1)),
		"processes":        procs,
	}
	if e := firstErr.Load(); e != nil {
		res["first_error"] = e
	}
	return res, nil
}

// forEach calls f(0..n-1) from parallel goroutines.
func forEach(n, parallel int, f func(int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(parallel, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

// wait polls until url carries one WebSocket echo and GET /hello on the same
// host answers 200, so a measurement never starts against a proxy that is
// still starting or misconfigured.
func wait(url string, timeout time.Duration) error {
	httpURL := "http" + strings.TrimPrefix(url, "ws")
	httpURL = strings.TrimSuffix(httpURL, "/") + "/hello"
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = tryOnce(url, httpURL); last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v: %w", url, timeout, last)
}

func tryOnce(wsURL, httpURL string) error {
	c, _, err := dialer(64).Dial(wsURL, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte("ready?")); err != nil {
		return err
	}
	if _, got, err := c.ReadMessage(); err != nil || string(got) != "ready?" {
		return fmt.Errorf("echo: %q, %v", got, err)
	}
	cl := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS()}}
	resp, err := cl.Get(httpURL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "hello" {
		return fmt.Errorf("GET %s: %d %q", httpURL, resp.StatusCode, body)
	}
	return nil
}

// freePorts prints n distinct free loopback ports. They are all held open
// until printed so the kernel does not hand out the same one twice.
func freePorts(n int) error {
	var ports []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	fmt.Println(strings.Join(ports, " "))
	return nil
}

// parsePids reads "1,2,3"; an empty list is allowed (RSS then reads 0).
func parsePids(s string) ([]int, error) {
	var pids []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("-pids: %q is not a pid", f)
		}
		pids = append(pids, p)
	}
	return pids, nil
}

// rssKiB sums VmRSS over pids and all their descendants, looked up afresh at
// every reading: nginx's workers are children of the pid we know.
func rssKiB(pids []int) (int, error) {
	all := withDescendants(pids)
	total := 0
	for _, p := range all {
		kib, err := vmRSS(p)
		if err != nil {
			return 0, err
		}
		total += kib
	}
	return total, nil
}

func withDescendants(roots []int) []int {
	children := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// The command name in parentheses may hold spaces; fields after
		// the last ')' are: state ppid ...
		rest := string(b[bytes.LastIndexByte(b, ')')+1:])
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		pid, err1 := strconv.Atoi(filepath.Base(filepath.Dir(st)))
		ppid, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	seen := map[int]bool{}
	var walk func(int)
	walk = func(p int) {
		if seen[p] {
			return
		}
		seen[p] = true
		out = append(out, p)
		for _, c := range children[p] {
			walk(c)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	return out
}

// vmRSS reads VmRSS of pid from /proc.
func vmRSS(pid int) (int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// addTLS records what a wss:// connection negotiated ("TLS 1.3
// TLS_AES_128_GCM_SHA256 X25519"), so a report can check that every proxy
// was measured with the same parameters. A ws:// connection adds nothing.
func addTLS(res map[string]any, c *websocket.Conn) {
	tc, ok := c.NetConn().(*tls.Conn)
	if !ok {
		return
	}
	st := tc.ConnectionState()
	res["tls"] = fmt.Sprintf("%s %s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID)
	if st.DidResume {
		res["tls"] = res["tls"].(string) + " resumed"
	}
}

// cpuMeter measures the CPU time a fixed set of processes spends during one
// measurement: the pids given and their descendants when it was made (nginx's
// workers are children of its master).
type cpuMeter struct {
	pids  []int
	start float64
}

// newCPUMeter returns nil (a meter that measures nothing) for an empty list.
func newCPUMeter(list string) (*cpuMeter, error) {
	pids, err := parsePids(list)
	if err != nil || len(pids) == 0 {
		return nil, err
	}
	return &cpuMeter{pids: withDescendants(pids)}, nil
}

func (m *cpuMeter) begin() error {
	if m == nil {
		return nil
	}
	var err error
	m.start, err = cpuSeconds(m.pids)
	return err
}

// end adds "proxy_cpu_s" (CPU seconds since begin) and "proxy_processes".
func (m *cpuMeter) end(res map[string]any) error {
	if m == nil {
		return nil
	}
	now, err := cpuSeconds(m.pids)
	if err != nil {
		return err
	}
	// Rounded to the tick, 10 ms: the difference of two tick counts.
	res["proxy_cpu_s"], res["proxy_processes"] = math.Round((now-m.start)*clockTicks)/clockTicks, len(m.pids)
	return nil
}

// printCPU prints the CPU seconds pids and their descendants have used so
// far, for a harness that measures around another load generator (wrk).
func printCPU(list string) error {
	pids, err := parsePids(list)
	if err != nil {
		return err
	}
	s, err := cpuSeconds(withDescendants(pids))
	if err != nil {
		return err
	}
	fmt.Printf("%.2f\n", s)
	return nil
}

// clockTicks is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 for everything it exports to user space.
const clockTicks = 100

// cpuSeconds sums utime + stime over pids. A process's stat counts all its
// threads, including those that have ended.
func cpuSeconds(pids []int) (float64, error) {
	total := 0
	for _, p := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat")
		if err != nil {
			return 0, fmt.Errorf("cpu time of pid %d: %w", p, err)
		}
		// Fields after the command name (which may hold spaces) start with
		// the state, field 3; utime and stime are fields 14 and 15.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("cpu time of pid %d: short /proc stat", p)
		}
		ut, err1 := strconv.Atoi(f[11])
		st, err2 := strconv.Atoi(f[12])
		if err := errors.Join(err1, err2); err != nil {
			return 0, fmt.Errorf("cpu time of pid %d: %w", p, err)
		}
		total += ut + st
	}
	return float64(total) / clockTicks, nil
}
