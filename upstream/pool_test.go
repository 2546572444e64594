package upstream

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// newTestPool is NewPool for options that must be valid.
func newTestPool(tb testing.TB, name string, servers []*Server, opts Options) *Pool {
	tb.Helper()
	p, err := NewPool(name, servers, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func TestPickSmoothWeighted(t *testing.T) {
	a, b, c := NewServer("a", Settings{Weight: 5}), NewServer("b", Settings{Weight: 1}), NewServer("c", Settings{Weight: 1})
	p := newTestPool(t, "p", []*Server{a, b, c}, Options{})
	var got string
	for range 7 {
		s, err := p.Pick(&Request{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got += s.Address
	}
	// nginx's documented sequence for weights 5,1,1.
	if got != "aabacaa" {
		t.Fatalf("sequence %q, want %q", got, "aabacaa")
	}
}

func TestPickEvenSpread(t *testing.T) {
	servers := []*Server{{Address: "a"}, {Address: "b"}, {Address: "c"}}
	p := newTestPool(t, "p", servers, Options{})
	counts := map[string]int{}
	for range 300 {
		s, _ := p.Pick(&Request{}, nil)
		counts[s.Address]++
	}
	for _, s := range servers {
		if counts[s.Address] != 100 {
			t.Fatalf("counts %v, want 100 each", counts)
		}
	}
}

func TestPickSkipsTried(t *testing.T) {
	a, b := &Server{Address: "a"}, &Server{Address: "b"}
	p := newTestPool(t, "p", []*Server{a, b}, Options{})
	first, _ := p.Pick(&Request{}, nil)
	second, err := p.Pick(&Request{}, []*Server{first})
	if err != nil || second == first {
		t.Fatalf("second pick %v, %v; want the other server", second, err)
	}
	if _, err := p.Pick(&Request{}, []*Server{a, b}); !errors.Is(err, ErrNoServer) {
		t.Fatalf("all tried: err %v, want ErrNoServer", err)
	}
}

func TestLeases(t *testing.T) {
	s := &Server{Address: "a"}
	s.Acquire()
	s.Acquire()
	s.Release()
	if s.Active() != 1 {
		t.Fatalf("active %d, want 1", s.Active())
	}
}

// pickAll picks n times with r and counts the servers by address.
func pickAll(t *testing.T, p *Pool, r *Request, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		s, err := p.Pick(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[s.Address]++
	}
	return counts
}

func TestMaxConns(t *testing.T) {
	a, b := NewServer("a", Settings{MaxConns: 1}), NewServer("b", Settings{MaxConns: 2})
	p := newTestPool(t, "p", []*Server{a, b}, Options{})
	a.Acquire()
	// a is full: every pick goes to b until b is full too.
	for range 2 {
		s, err := p.Pick(&Request{}, nil)
		if err != nil || s != b {
			t.Fatalf("pick %v, %v; want b", s, err)
		}
		s.Acquire()
	}
	if _, err := p.Pick(&Request{}, nil); !errors.Is(err, ErrAllFull) {
		t.Fatalf("all full: err %v, want ErrAllFull", err)
	}
	// Tried and full leaves nothing to try but something busy: still 503.
	if _, err := p.Pick(&Request{}, []*Server{a}); !errors.Is(err, ErrAllFull) {
		t.Fatalf("a tried, b full: err %v, want ErrAllFull", err)
	}
	if _, err := p.Pick(&Request{}, []*Server{a, b}); !errors.Is(err, ErrNoServer) {
		t.Fatalf("all tried: err %v, want ErrNoServer", err)
	}
	b.Release()
	if s, err := p.Pick(&Request{}, nil); err != nil || s != b {
		t.Fatalf("after a release: %v, %v; want b", s, err)
	}
}

func TestBackup(t *testing.T) {
	now := time.Unix(1000, 0)
	a := NewServer("a", Settings{MaxConns: 1})
	b := NewServer("b", Settings{MaxConns: 1})
	bk := NewServer("backup", Settings{Backup: true})
	p := newTestPool(t, "p", []*Server{a, b, bk}, Options{MaxFails: 1, FailTimeout: 10 * time.Second, Now: func() time.Time { return now }})

	if c := pickAll(t, p, &Request{}, 10); c["backup"] != 0 {
		t.Fatalf("primaries up: counts %v, want no backup", c)
	}
	// Busy primaries do not bring the backup in.
	a.Acquire()
	b.Acquire()
	if s, err := p.Pick(&Request{}, nil); !errors.Is(err, ErrAllFull) {
		t.Fatalf("primaries full: %v, %v; want ErrAllFull", s, err)
	}
	// Primaries all tried for this request (they failed): the retry goes
	// to the backup, as in nginx, even before max_fails takes them out.
	a.Release()
	b.Release()
	if s, err := p.Pick(&Request{}, []*Server{a, b}); err != nil || s.Address != "backup" {
		t.Fatalf("primaries tried: %v, %v; want the backup", s, err)
	}
	// One primary down (by configuration), one left: still no backup.
	p.SetServers([]*Server{NewServer("a", Settings{MaxConns: 1, Down: true}), b, bk})
	if c := pickAll(t, p, &Request{}, 10); c["b"] != 10 {
		t.Fatalf("a down: counts %v, want all on b", c)
	}
	// Every primary down, one by configuration and one by passive health:
	// the backup takes over, and a retry after it fails finds nothing.
	p.ReportFailure(b)
	if c := pickAll(t, p, &Request{}, 10); c["backup"] != 10 {
		t.Fatalf("primaries down: counts %v, want all on the backup", c)
	}
	if _, err := p.Pick(&Request{}, []*Server{bk}); !errors.Is(err, ErrNoServer) {
		t.Fatalf("backup tried: err %v, want ErrNoServer", err)
	}
	// b's fail_timeout over: the primaries are back.
	now = now.Add(10 * time.Second)
	if c := pickAll(t, p, &Request{}, 10); c["b"] != 10 {
		t.Fatalf("b back: counts %v, want all on b", c)
	}
}

func TestDownAndRemovedNeverPicked(t *testing.T) {
	a, b, c := NewServer("a", Settings{Down: true}), &Server{Address: "b"}, &Server{Address: "c"}
	p := newTestPool(t, "p", []*Server{a, b, c}, Options{})
	p.SetServers([]*Server{NewServer("a", Settings{Down: true}), {Address: "b"}})
	if counts := pickAll(t, p, &Request{}, 100); counts["b"] != 100 {
		t.Fatalf("counts %v, want all on b (a down, c removed)", counts)
	}
	if s, err := p.Pick(&Request{}, []*Server{b}); !errors.Is(err, ErrNoServer) {
		t.Fatalf("only b usable, tried: %v, %v; want ErrNoServer", s, err)
	}
}

func TestPassiveHealth(t *testing.T) {
	start := time.Unix(1000, 0)
	now := start
	clock := func() time.Time { return now }
	a, b := &Server{Address: "a"}, &Server{Address: "b"}
	p := newTestPool(t, "p", []*Server{a, b}, Options{MaxFails: 2, FailTimeout: 10 * time.Second, Now: clock})

	// Two failures within fail_timeout: a is out for fail_timeout.
	p.ReportFailure(a)
	now = now.Add(3 * time.Second)
	p.ReportFailure(a)
	downAt := now
	for _, at := range []time.Duration{0, 5 * time.Second, 10*time.Second - time.Millisecond} {
		now = downAt.Add(at)
		if c := pickAll(t, p, &Request{}, 20); c["a"] != 0 {
			t.Fatalf("%v after the second failure: counts %v, want a skipped", at, c)
		}
	}
	now = downAt.Add(10 * time.Second)
	if c := pickAll(t, p, &Request{}, 20); c["a"] != 10 {
		t.Fatalf("fail_timeout over: counts %v, want a back (10 of 20)", c)
	}

	// Failures further apart than fail_timeout do not add up.
	p.ReportFailure(b)
	now = now.Add(11 * time.Second)
	p.ReportFailure(b)
	if c := pickAll(t, p, &Request{}, 20); c["b"] != 10 {
		t.Fatalf("failures 11s apart: counts %v, want b still in (10 of 20)", c)
	}

	// MaxFails 0 disables passive health.
	off := newTestPool(t, "off", []*Server{{Address: "a"}, {Address: "b"}}, Options{MaxFails: 0, FailTimeout: 10 * time.Second, Now: clock})
	for range 5 {
		off.ReportFailure(off.Servers()[0])
	}
	if c := pickAll(t, off, &Request{}, 20); c["a"] != 10 {
		t.Fatalf("max_fails 0: counts %v, want a still in (10 of 20)", c)
	}
}

func TestSticky(t *testing.T) {
	servers := []*Server{{Address: "a"}, {Address: "b"}, {Address: "c"}}
	p := newTestPool(t, "p", servers, Options{Balance: "least_conn", MaxFails: 1, FailTimeout: 10 * time.Second})
	for _, s := range servers {
		if p.ByToken(s.Token()) != s {
			t.Fatalf("ByToken(%s's token) is not %s", s.Address, s.Address)
		}
	}
	if p.ByToken("") != nil || p.ByToken("forged") != nil {
		t.Fatal("ByToken found a server for an empty or forged token")
	}
	// The token wins over least_conn, however loaded its server is.
	b := servers[1]
	for range 20 {
		s, err := p.Pick(&Request{Sticky: b.Token()}, nil)
		if err != nil || s != b {
			t.Fatalf("sticky pick %v, %v; want b", s, err)
		}
		s.Acquire()
	}
	// A forged token is ignored: least_conn avoids the loaded b.
	if c := pickAll(t, p, &Request{Sticky: "0123456789abcdef"}, 10); c["b"] != 0 {
		t.Fatalf("forged token: counts %v, want b avoided", c)
	}
	// The token's server down: the balancer decides, even though b is
	// now the least loaded.
	for range 20 {
		b.Release()
	}
	servers[0].Acquire()
	servers[2].Acquire()
	p.ReportFailure(b)
	if s, err := p.Pick(&Request{Sticky: b.Token()}, nil); err != nil || s == b {
		t.Fatalf("sticky to a down server: %v, %v; want another server", s, err)
	}
	// Tried: a retry leaves the sticky server too.
	c := servers[2]
	if s, err := p.Pick(&Request{Sticky: c.Token()}, []*Server{c}); err != nil || s == c {
		t.Fatalf("sticky server tried: %v, %v; want another server", s, err)
	}
}

// picker runs n Pick/Acquire/Release rounds on p, reading the picked
// server's settings and token outside the pool's lock as the proxy does.
func picker(p *Pool, n int) {
	for range n {
		s, err := p.Pick(&Request{Key: "k"}, nil)
		if err != nil {
			continue
		}
		if s.Acquire() {
			_, _ = s.Settings(), s.Token()
			p.ReportFailure(s)
			s.Release()
		}
	}
}

// during runs work in 4 goroutines and calls change(0), change(1), ...
// until they are all done (at most 100000 times), so that the changes
// overlap the work however the goroutines are scheduled.
func during(t *testing.T, work func(), change func(i int)) {
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(work)
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	for i := range 100000 {
		select {
		case <-done:
			if i < 10 {
				t.Logf("only %d changes overlapped the work", i)
			}
			return
		default:
		}
		change(i)
	}
	<-done
}

// SetServers changing a kept server's settings must not race with picks
// and leases, which read them without the pool's lock (run under -race).
func TestSetServersRacesPicks(t *testing.T) {
	list := func(i int) []*Server {
		return []*Server{
			NewServer("a", Settings{Weight: i%3 + 1, MaxConns: i%5 + 1}),
			NewServer("b", Settings{Weight: (i+1)%3 + 1, MaxConns: (i+2)%5 + 1}),
			NewServer("c", Settings{Weight: 1, MaxConns: i%2 + 1, Backup: i%4 == 0}),
		}
	}
	for _, b := range []string{"round_robin", "least_conn", "hash"} {
		p := newTestPool(t, "p", list(0), Options{Balance: b, HashBoundedLoad: 1.25, MaxFails: 1000})
		during(t, func() { picker(p, 2000) }, func(i int) { p.SetServers(list(i)) })
	}
}

// A server dropped while it holds leases (live tunnels) and listed again
// comes back as the same object: its tunnels count against it, and its
// health and sticky token carry on. One whose leases ended is forgotten.
func TestRemovedServerRevives(t *testing.T) {
	now := time.Unix(1000, 0)
	a, b := NewServer("a", Settings{}), NewServer("b", Settings{})
	p := newTestPool(t, "p", []*Server{a, b}, Options{Balance: "least_conn", MaxFails: 2, FailTimeout: time.Minute,
		Now: func() time.Time { return now }})
	if !a.Acquire() {
		t.Fatal("a refused a lease")
	}
	p.ReportFailure(a) // one of max_fails 2

	p.SetServers([]*Server{NewServer("b", Settings{})})
	if !a.Removed() || serverAt(p, "a") != nil {
		t.Fatal("a dropped from the list is still in the pool")
	}
	p.SetServers([]*Server{NewServer("a", Settings{Weight: 3}), NewServer("b", Settings{})})
	got := serverAt(p, "a")
	if got != a {
		t.Fatalf("a listed again with a live tunnel: a new server (removed=%v, %d leases on the old one)", a.Removed(), a.Active())
	}
	if a.Removed() || a.Active() != 1 || a.Settings().Weight != 3 {
		t.Fatalf("revived a: removed %v, %d leases, weight %d; want false, 1, 3", a.Removed(), a.Active(), a.Settings().Weight)
	}
	if p.ByToken(a.Token()) != a {
		t.Error("the revived server's sticky token does not name it")
	}
	p.ReportFailure(a) // the second failure: a's health carried on
	if c := pickAll(t, p, &Request{}, 10); c["a"] != 0 {
		t.Errorf("a down after two failures across its removal: counts %v, want none on a", c)
	}

	// Leases ended while removed: the server is forgotten, and the
	// address comes back as a new server.
	p.SetServers([]*Server{NewServer("b", Settings{})})
	a.Release()
	p.SetServers([]*Server{NewServer("b", Settings{})})
	p.SetServers([]*Server{NewServer("a", Settings{}), NewServer("b", Settings{})})
	if serverAt(p, "a") == a || !a.Removed() {
		t.Error("a server without leases was kept after it left the list")
	}
	// Neither is one dropped without leases.
	old := serverAt(p, "b")
	p.SetServers([]*Server{NewServer("a", Settings{})})
	p.SetServers([]*Server{NewServer("a", Settings{}), NewServer("b", Settings{})})
	if serverAt(p, "b") == old {
		t.Error("a server dropped without leases came back as the same object")
	}
}

// An unknown balance is an error of NewPool and Configure, never a panic,
// and a failed Configure leaves the pool as it was.
func TestUnknownBalance(t *testing.T) {
	want := `upstream p: balance "random" is unknown (known: least_conn, round_robin, hash)`
	if _, err := NewPool("p", nil, Options{Balance: "random"}); err == nil || err.Error() != want {
		t.Fatalf("NewPool: %v, want %q", err, want)
	}
	a, b := NewServer("a", Settings{}), NewServer("b", Settings{})
	p := newTestPool(t, "p", []*Server{a, b}, Options{Balance: "least_conn"})
	if err := p.Configure(Options{Balance: "random"}); err == nil || err.Error() != want {
		t.Fatalf("Configure: %v, want %q", err, want)
	}
	a.Acquire()
	if c := pickAll(t, p, &Request{}, 10); c["b"] != 10 {
		t.Fatalf("after a failed Configure: counts %v, want least_conn's all on b", c)
	}
}

// Configure changes the policies of a pool that keeps its servers, with
// their leases, health and sticky tokens.
func TestConfigureKeepsServers(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	a, b, c := NewServer("a", Settings{}), NewServer("b", Settings{}), NewServer("c", Settings{})
	p := newTestPool(t, "p", []*Server{a, b, c}, Options{Balance: "round_robin", MaxFails: 3, FailTimeout: time.Minute, Now: clock})
	a.Acquire()
	a.Acquire()
	b.Acquire()
	p.ReportFailure(c)
	token := c.Token()

	if err := p.Configure(Options{Balance: "least_conn", MaxFails: 2, FailTimeout: time.Minute, Now: clock}); err != nil {
		t.Fatal(err)
	}
	if got := p.Servers(); len(got) != 3 || got[0] != a || got[1] != b || got[2] != c || a.Active() != 2 || b.Active() != 1 {
		t.Fatalf("servers after Configure: %v, leases a=%d b=%d; want the same three, 2 and 1", got, a.Active(), b.Active())
	}
	if c.Token() != token || p.ByToken(token) != c {
		t.Error("c's sticky token changed")
	}
	// least_conn now: c has no lease, so it takes every pick.
	if got := pickAll(t, p, &Request{}, 10); got["c"] != 10 {
		t.Fatalf("least_conn after Configure: counts %v, want all on c", got)
	}
	// max_fails 2 now: c's failure from before and this one put it down.
	p.ReportFailure(c)
	if got := pickAll(t, p, &Request{}, 10); got["c"] != 0 {
		t.Fatalf("c failed twice with max_fails 2: counts %v, want c skipped", got)
	}
}

// Configure while connections are placed and failures reported must not
// race with them (run under -race).
func TestConfigureRacesPicks(t *testing.T) {
	p := newTestPool(t, "p", []*Server{NewServer("a", Settings{MaxConns: 2}), NewServer("b", Settings{Weight: 2})}, Options{})
	names := append(Balancers(), "")
	during(t, func() { picker(p, 2000) }, func(i int) {
		opts := Options{Balance: names[i%len(names)], HashBoundedLoad: 1.25, MaxFails: 1000 + i, FailTimeout: time.Duration(i) * time.Millisecond}
		if err := p.Configure(opts); err != nil {
			t.Error(err)
		}
	})
}
