// Command wsload is wsgate's WebSocket load generator and echo peer. It
// measures what DESIGN.md cares about: echo round trips per second and the
// memory a proxy spends per idle tunnel.
//
//	wsload -mode server -listen 127.0.0.1:9001          echo server
//	wsload -mode echo -url ws://127.0.0.1:8080/ -conns 64 -size 64 -duration 5s
//	wsload -mode hold -url ws://127.0.0.1:8080/ -conns 5000 -pid <proxy pid>
//
// Every mode is bounded: echo by -duration, hold by -conns and -hold.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
)

func main() {
	mode := flag.String("mode", "echo", "server | echo | hold")
	listen := flag.String("listen", "127.0.0.1:9001", "server: listen address")
	url := flag.String("url", "ws://127.0.0.1:8080/", "echo, hold: WebSocket URL")
	conns := flag.Int("conns", 64, "echo, hold: connections")
	size := flag.Int("size", 64, "echo: message size in bytes")
	duration := flag.Duration("duration", 5*time.Second, "echo: how long to measure")
	pid := flag.Int("pid", 0, "hold: process whose RSS is measured")
	hold := flag.Duration("hold", 2*time.Second, "hold: how long the tunnels stay idle before measuring")
	flag.Parse()

	var err error
	switch *mode {
	case "server":
		err = serve(*listen)
	case "echo":
		err = echo(*url, *conns, *size, *duration)
	case "hold":
		err = holdIdle(*url, *conns, *pid, *hold)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(1)
	}
}

// serve echoes every message back on every connection.
func serve(addr string) error {
	up := websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}
	fmt.Fprintln(os.Stderr, "wsload: echo server on", addr)
	return http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}))
}

// echo runs conns clients, each sending a message and waiting for its echo
// in a loop, and prints round trips per second with p50 and p99 latency.
func echo(url string, conns, size int, d time.Duration) error {
	clients := make([]*websocket.Conn, conns)
	for i := range clients {
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			return fmt.Errorf("dial %d: %w", i, err)
		}
		c.SetReadLimit(64 << 20)
		clients[i] = c
	}
	msg := bytes.Repeat([]byte("x"), size)
	var total atomic.Int64
	lat := make([][]time.Duration, conns)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
					errs <- err
					return
				}
				_, got, err := c.ReadMessage()
				if err != nil {
					errs <- err
					return
				}
				if len(got) != size {
					errs <- fmt.Errorf("echo of %d bytes came back as %d", size, len(got))
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
				total.Add(1)
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	elapsed := time.Since(start)
	for _, c := range clients {
		c.Close()
	}
	close(errs)
	for err := range errs {
		return err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	p := func(q float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[int(q*float64(len(all)-1))]
	}
	fmt.Printf("echo conns=%d size=%d round_trips_per_s=%.0f p50_us=%d p99_us=%d\n",
		conns, size, float64(total.Load())/elapsed.Seconds(), p(0.50).Microseconds(), p(0.99).Microseconds())
	return nil
}

// holdIdle opens conns tunnels, sends one message on each (so buffers were
// used once), lets them sit idle, then checks every one still echoes and
// prints the proxy's RSS growth per tunnel.
func holdIdle(url string, conns, pid int, hold time.Duration) error {
	before, err := rssKiB(pid)
	if err != nil {
		return err
	}
	clients := make([]*websocket.Conn, 0, conns)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 512, WriteBufferSize: 512}
	for i := 0; i < conns; i++ {
		c, _, err := d.Dial(url, nil)
		if err != nil {
			return fmt.Errorf("dial %d: %w", i, err)
		}
		clients = append(clients, c)
		if err := roundTrip(c, "hello"); err != nil {
			return fmt.Errorf("tunnel %d: %w", i, err)
		}
	}
	time.Sleep(hold)
	after, err := rssKiB(pid)
	if err != nil {
		return err
	}
	alive := 0
	for _, c := range clients {
		if roundTrip(c, "still there?") == nil {
			alive++
		}
	}
	fmt.Printf("hold conns=%d alive=%d rss_before_kib=%d rss_after_kib=%d kib_per_tunnel=%.1f\n",
		conns, alive, before, after, float64(after-before)/float64(conns))
	return nil
}

func roundTrip(c *websocket.Conn, msg string) error {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return err
	}
	_, got, err := c.ReadMessage()
	if err == nil && string(got) != msg {
		err = fmt.Errorf("echo %q came back as %q", msg, got)
	}
	return err
}

// rssKiB reads VmRSS of pid from /proc.
func rssKiB(pid int) (int, error) {
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
