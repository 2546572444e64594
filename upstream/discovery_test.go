package upstream

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testdns"
)

// addresses lists the pool's servers' addresses, sorted.
func addresses(p *Pool) []string {
	var out []string
	for _, s := range p.Servers() {
		out = append(out, s.Address)
	}
	slices.Sort(out)
	return out
}

func serverAt(p *Pool, addr string) *Server {
	for _, s := range p.Servers() {
		if s.Address == addr {
			return s
		}
	}
	return nil
}

func TestDiscoverFollowsDNS(t *testing.T) {
	z := testdns.Start(t)
	z.Set("chat.test", "A 127.0.0.1", "AAAA ::1")
	p := newTestPool(t, "chat", nil, Options{Balance: "round_robin"})
	var logs logRecorder
	const interval = 200 * time.Millisecond
	d := NewDiscovery(p, []ServerSpec{{Address: "chat.test:8080", Settings: Settings{Weight: 2, MaxConns: 50}}}, z.Addr, interval, logs.logf)
	if err := d.ResolveNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := addresses(p), []string{"127.0.0.1:8080", "[::1]:8080"}; !slices.Equal(got, want) {
		t.Fatalf("servers %q, want %q", got, want)
	}
	for _, s := range p.Servers() {
		if st := s.Settings(); st != (Settings{Weight: 2, MaxConns: 50}) {
			t.Errorf("%s: %+v, want the spec's options", s.Address, st)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)

	// 2 → 3 addresses: the new one takes connections after the next resolve.
	z.Set("chat.test", "A 127.0.0.1", "A 127.0.0.2", "AAAA ::1")
	took := waitFor(t, "third address in the pool", func() bool {
		s := serverAt(p, "127.0.0.2:8080")
		return s != nil && picked(p, s)
	})
	t.Logf("added address picked %v after the DNS change", took)

	// A live tunnel to an address that then leaves DNS.
	gone := serverAt(p, "127.0.0.2:8080")
	gone.Acquire()
	kept := serverAt(p, "127.0.0.1:8080")

	// 3 → 1 address.
	z.Set("chat.test", "A 127.0.0.1")
	took = waitFor(t, "pool down to one server", func() bool {
		return slices.Equal(addresses(p), []string{"127.0.0.1:8080"})
	})
	t.Logf("removed addresses gone %v after the DNS change", took)
	if serverAt(p, "127.0.0.1:8080") != kept {
		t.Error("a server that stayed in DNS got a new object (and lost its leases and health)")
	}
	if !gone.removed.Load() {
		t.Error("server gone from DNS is not marked removed")
	}
	if gone.Active() != 1 {
		t.Errorf("removed server's live tunnel count %d, want 1", gone.Active())
	}
	for range 20 {
		if s, err := p.Pick(&Request{}, nil); err != nil || s != kept {
			t.Fatalf("picked %v, %v; want only %s", s, err, kept.Address)
		}
	}
	gone.Release()
	if len(logs.lines) != 0 {
		t.Errorf("logs without failures: %q", logs.lines)
	}
}

func TestDiscoverSRV(t *testing.T) {
	z := testdns.Start(t)
	z.Set("_ws._tcp.chat.test",
		"SRV 10 60 9001 a.chat.test.",
		"SRV 10 0 9002 b.chat.test.",
		"SRV 20 5 9003 c.chat.test.",
		"SRV 10 7 9004 gone.chat.test.")
	z.Set("a.chat.test", "A 127.0.0.1")
	z.Set("b.chat.test", "A 127.0.0.2")
	z.Set("c.chat.test", "A 127.0.0.3", "A 127.0.0.4")
	p := newTestPool(t, "chat", nil, Options{Balance: "round_robin"})
	specs := []ServerSpec{{SRV: "_ws._tcp.chat.test", Settings: Settings{MaxConns: 9}}, {Address: "127.0.0.9:7000", Settings: Settings{Weight: 4}}}
	d := NewDiscovery(p, specs, z.Addr, time.Minute, nil)
	if err := d.ResolveNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	type want struct {
		weight, maxConns int
		backup           bool
	}
	wants := map[string]want{
		"127.0.0.1:9001": {60, 9, false},
		"127.0.0.2:9002": {1, 9, false}, // SRV weight 0
		"127.0.0.3:9003": {5, 9, true},
		"127.0.0.4:9003": {5, 9, true},
		"127.0.0.9:7000": {4, 0, false}, // an IP address is used as is
	}
	if got := addresses(p); len(got) != len(wants) {
		t.Fatalf("servers %q, want %d (a target without addresses is skipped)", got, len(wants))
	}
	for addr, w := range wants {
		s := serverAt(p, addr)
		if s == nil {
			t.Errorf("no server %s", addr)
			continue
		}
		if got := (want{s.Settings().Weight, s.Settings().MaxConns, s.Settings().Backup}); got != w {
			t.Errorf("%s: %+v, want %+v", addr, got, w)
		}
	}
	for range 200 {
		if s, err := p.Pick(&Request{}, nil); err != nil || s.Settings().Backup {
			t.Fatalf("picked %v, %v while primaries are up", s, err)
		}
	}
}

func TestDiscoverKeepsLastOnFailure(t *testing.T) {
	z := testdns.Start(t)
	z.Set("chat.test", "A 127.0.0.1", "A 127.0.0.2")
	p := newTestPool(t, "chat", nil, Options{Balance: "round_robin"})
	var logs logRecorder
	const interval = 100 * time.Millisecond
	d := NewDiscovery(p, []ServerSpec{{Address: "chat.test:80"}, {Address: "127.0.0.9:80"}}, z.Addr, interval, logs.logf)
	if err := d.ResolveNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	two := []string{"127.0.0.1:80", "127.0.0.2:80", "127.0.0.9:80"}

	failed := func() int {
		return logs.count("upstream chat: resolving chat.test:80:", "keeping its 2 last known servers")
	}
	rounds := func(n int64) {
		// Each round asks A and AAAA at least once.
		q := z.Queries.Load()
		waitFor(t, "more resolves", func() bool { return z.Queries.Load() >= q+2*n })
	}

	z.SetServfail(true)
	waitFor(t, "failure logged", func() bool { return failed() == 1 })
	rounds(3)
	if got := addresses(p); !slices.Equal(got, two) {
		t.Errorf("servers after failed lookups %q, want the last known %q", got, two)
	}
	if failed() != 1 {
		t.Errorf("failure streak logged %d times, want once: %q", failed(), logs.lines)
	}

	z.SetServfail(false)
	z.Set("chat.test", "A 127.0.0.2")
	waitFor(t, "recovered lookup applied", func() bool {
		return slices.Equal(addresses(p), []string{"127.0.0.2:80", "127.0.0.9:80"})
	})
	if got := logs.count("upstream chat: chat.test:80 resolves again (1 servers)"); got != 1 {
		t.Errorf("%d recovery lines, want 1: %q", got, logs.lines)
	}

	// A name that vanishes (NXDOMAIN) is a new failure streak; its last
	// servers stay.
	z.Set("chat.test")
	waitFor(t, "second streak logged", func() bool {
		return logs.count("resolving chat.test:80:", "keeping its 1 last known servers") == 1
	})
	rounds(2)
	if got := addresses(p); !slices.Equal(got, []string{"127.0.0.2:80", "127.0.0.9:80"}) {
		t.Errorf("servers after NXDOMAIN %q", got)
	}
}

// At startup a name that resolves to nothing is an error.
func TestDiscoverResolveNowFails(t *testing.T) {
	z := testdns.Start(t)
	z.Set("chat.test", "A 127.0.0.1")
	p := newTestPool(t, "chat", nil, Options{})
	d := NewDiscovery(p, []ServerSpec{{Address: "chat.test:80"}, {Address: "missing.test:80"}}, z.Addr, time.Minute, nil)
	err := d.ResolveNow(context.Background())
	if err == nil || !strings.Contains(err.Error(), "missing.test") {
		t.Fatalf("ResolveNow: %v, want an error naming missing.test", err)
	}
	if got := addresses(p); !slices.Equal(got, []string{"127.0.0.1:80"}) {
		t.Errorf("servers %q", got)
	}
}

// Rediscovery that changes the servers' settings (SRV weights and
// priorities) while connections are placed must not race with them (run
// under -race).
func TestDiscoverRacesPicks(t *testing.T) {
	z := testdns.Start(t)
	z.Set("a.chat.test", "A 127.0.0.1")
	z.Set("b.chat.test", "A 127.0.0.2")
	srv := func(i int) {
		z.Set("_ws._tcp.chat.test",
			"SRV 10 "+strconv.Itoa(i%7)+" 9001 a.chat.test.",
			"SRV "+strconv.Itoa(10+i%2)+" 5 9002 b.chat.test.")
	}
	srv(0)
	p := newTestPool(t, "chat", nil, Options{Balance: "least_conn", MaxFails: 1000})
	d := NewDiscovery(p, []ServerSpec{{SRV: "_ws._tcp.chat.test", Settings: Settings{MaxConns: 3}}}, z.Addr, 5*time.Millisecond, nil)
	if err := d.ResolveNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for range 10000 {
				select {
				case <-stop:
					return
				default:
				}
				picker(p, 10)
			}
		})
	}
	for i := 1; i <= 10; i++ {
		srv(i)
		want := max(i%7, 1)
		waitFor(t, "new SRV weight applied", func() bool {
			s := serverAt(p, "127.0.0.1:9001")
			return s != nil && s.Settings().Weight == want
		})
	}
	close(stop)
	wg.Wait()
}
