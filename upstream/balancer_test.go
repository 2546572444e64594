package upstream

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestRoundRobinWeights(t *testing.T) {
	p := newTestPool(t, "p", []*Server{NewServer("a", Settings{Weight: 3}), NewServer("b", Settings{Weight: 1})}, Options{Balance: "round_robin"})
	c := pickAll(t, p, &Request{}, 400)
	t.Logf("round_robin 3:1 over 400 picks: a=%d b=%d", c["a"], c["b"])
	if abs(c["a"]-300) > 2 || abs(c["b"]-100) > 2 {
		t.Fatalf("counts %v, want 300/100 ±2", c)
	}
}

func TestLeastConnRefillsEmptiedServer(t *testing.T) {
	servers := []*Server{{Address: "a"}, {Address: "b"}, {Address: "c"}}
	p := newTestPool(t, "p", servers, Options{Balance: "least_conn"})
	// 150 long-lived leases: 50 each.
	held := map[*Server]int{}
	for range 150 {
		s, err := p.Pick(&Request{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Acquire()
		held[s]++
	}
	for _, s := range servers {
		if held[s] != 50 {
			t.Fatalf("150 leases: %s has %d, want 50 each", s.Address, held[s])
		}
	}
	// b's 50 end; the next 50 all go to b.
	b := servers[1]
	for range 50 {
		b.Release()
	}
	c := map[string]int{}
	for range 50 {
		s, _ := p.Pick(&Request{}, nil)
		s.Acquire()
		c[s.Address]++
	}
	t.Logf("least_conn: 150 leases (50/50/50), 50 of b's released, 50 more picks: %v", c)
	if c["b"] != 50 {
		t.Fatalf("after emptying b: counts %v, want all 50 on b", c)
	}
}

func TestLeastConnWeights(t *testing.T) {
	// Short picks (no lease held): counts stay equal, weights decide.
	p := newTestPool(t, "p", []*Server{NewServer("a", Settings{Weight: 2}), NewServer("b", Settings{Weight: 1})}, Options{Balance: "least_conn"})
	c := pickAll(t, p, &Request{}, 300)
	t.Logf("least_conn 2:1, equal counts, 300 picks: %v", c)
	if c["a"] != 200 {
		t.Fatalf("counts %v, want 200/100", c)
	}
	// Long-lived leases: counts follow weights.
	q := newTestPool(t, "q", []*Server{NewServer("a", Settings{Weight: 2}), NewServer("b", Settings{Weight: 1})}, Options{Balance: "least_conn"})
	for range 300 {
		s, _ := q.Pick(&Request{}, nil)
		s.Acquire()
	}
	a, b := q.Servers()[0].Active(), q.Servers()[1].Active()
	t.Logf("least_conn 2:1, 300 held leases: a=%d b=%d", a, b)
	if a != 200 || b != 100 {
		t.Fatalf("leases a=%d b=%d, want 200/100", a, b)
	}
}

func TestLeastConnTiesShared(t *testing.T) {
	p := newTestPool(t, "p", []*Server{{Address: "a"}, {Address: "b"}, {Address: "c"}, {Address: "d"}}, Options{Balance: "least_conn"})
	c := pickAll(t, p, &Request{}, 400)
	for _, n := range c {
		if n != 100 {
			t.Fatalf("counts %v, want 100 each", c)
		}
	}
}

// fiveServers returns servers s0..s4, as "10.0.0.N:8080".
func fiveServers() []*Server {
	var list []*Server
	for i := range 5 {
		list = append(list, &Server{Address: fmt.Sprintf("10.0.0.%d:8080", i+1)})
	}
	return list
}

// randomKeys returns n distinct-looking keys from a fixed seed.
func randomKeys(n int) []string {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%016x", rng.Uint64())
	}
	return keys
}

func TestHashSameKeySameServer(t *testing.T) {
	p := newTestPool(t, "p", fiveServers(), Options{Balance: "hash"})
	c := pickAll(t, p, &Request{Key: "42", ClientIP: "192.0.2.1"}, 100)
	if len(c) != 1 {
		t.Fatalf("one key over 100 picks reached %v, want one server", c)
	}
	// A missing key falls back to the client IP: the same server as a
	// request whose key is that IP.
	for _, ip := range randomKeys(100) {
		byIP, _ := p.Pick(&Request{ClientIP: ip}, nil)
		byKey, _ := p.Pick(&Request{Key: ip, ClientIP: "198.51.100.7"}, nil)
		if byIP != byKey {
			t.Fatalf("no key, client IP %s: %s, want %s (the IP's server)", ip, byIP.Address, byKey.Address)
		}
	}
}

func TestHashDistributionAndRemoval(t *testing.T) {
	servers := fiveServers()
	p := newTestPool(t, "p", servers, Options{Balance: "hash"})
	keys := randomKeys(10000)
	before := make([]*Server, len(keys))
	counts := map[string]int{}
	for i, k := range keys {
		s, err := p.Pick(&Request{Key: k}, nil)
		if err != nil {
			t.Fatal(err)
		}
		before[i] = s
		counts[s.Address]++
	}
	t.Logf("hash: 10,000 keys over 5 servers: %v", counts)
	for _, s := range servers {
		if n := counts[s.Address]; n < 1700 || n > 2300 {
			t.Fatalf("%s has %d keys, want 2,000 ±15%%", s.Address, n)
		}
	}

	// A second pool, built independently with the servers in another
	// order (another gateway process), agrees on every key.
	other := fiveServers()
	other[0], other[1], other[2], other[3], other[4] = other[3], other[0], other[4], other[2], other[1]
	q := newTestPool(t, "p", other, Options{Balance: "hash"})
	for i, k := range keys {
		if s, _ := q.Pick(&Request{Key: k}, nil); s.Address != before[i].Address {
			t.Fatalf("key %s: second pool %s, first %s", k, s.Address, before[i].Address)
		}
	}

	// Remove one server: only its keys move.
	gone := servers[2]
	p.SetServers([]*Server{{Address: servers[0].Address}, {Address: servers[1].Address}, {Address: servers[3].Address}, {Address: servers[4].Address}})
	moved := 0
	for i, k := range keys {
		s, _ := p.Pick(&Request{Key: k}, nil)
		if s.Address == before[i].Address {
			continue
		}
		if before[i] != gone {
			t.Fatalf("key %s moved from %s to %s, though %s stayed", k, before[i].Address, s.Address, before[i].Address)
		}
		moved++
	}
	frac := float64(moved) / float64(len(keys))
	t.Logf("hash: removing 1 of 5 servers moved %d of 10,000 keys (%.2f%%), all from the removed server", moved, 100*frac)
	if moved != counts[gone.Address] || frac > 0.25 {
		t.Fatalf("moved %d keys (%.2f%%), want exactly the removed server's %d and at most 25%%", moved, 100*frac, counts[gone.Address])
	}
}

func TestHashWeights(t *testing.T) {
	p := newTestPool(t, "p", []*Server{NewServer("a:1", Settings{Weight: 3}), NewServer("b:1", Settings{Weight: 1})}, Options{Balance: "hash"})
	counts := map[string]int{}
	for _, k := range randomKeys(10000) {
		s, _ := p.Pick(&Request{Key: k}, nil)
		counts[s.Address]++
	}
	t.Logf("hash 3:1 over 10,000 keys: %v", counts)
	if n := counts["a:1"]; n < 7250 || n > 7750 {
		t.Fatalf("counts %v, want 7,500 ±250 on the weight-3 server", counts)
	}
}

// hotLoad places 1,000 leases on five servers, every other one with the
// key "hot", and returns the lease count of each server.
func hotLoad(t *testing.T, bound float64) []int64 {
	t.Helper()
	servers := fiveServers()
	p := newTestPool(t, "p", servers, Options{Balance: "hash", HashBoundedLoad: bound})
	keys := randomKeys(500)
	for i := range 1000 {
		key := "hot"
		if i%2 == 1 {
			key = keys[i/2]
		}
		s, err := p.Pick(&Request{Key: key}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Acquire()
	}
	var loads []int64
	for _, s := range servers {
		loads = append(loads, s.Active())
	}
	return loads
}

func TestHashBoundedLoad(t *testing.T) {
	limit := int64(math.Ceil(1.25 * 1000 / 5))
	loads := hotLoad(t, 1.25)
	t.Logf("hash_bounded_load 1.25: 1,000 leases, half on one hot key: per server %v (cap %d = ceil(1.25 x mean 200))", loads, limit)
	for i, n := range loads {
		if n > limit {
			t.Fatalf("server %d holds %d leases, above %d", i, n, limit)
		}
	}
	// Without the bound the hot key's server takes all its 500 leases.
	unbounded := hotLoad(t, 0)
	t.Logf("same load unbounded: per server %v", unbounded)
	if m := slices.Max(unbounded); m < 500 {
		t.Fatalf("unbounded: max %d leases, want the hot key's 500 on one server", m)
	}
}

func TestPickAllocatesNothing(t *testing.T) {
	for _, b := range []string{"round_robin", "least_conn", "hash"} {
		for _, bound := range []float64{0, 1.25} {
			if bound > 0 && b != "hash" {
				continue
			}
			p := newTestPool(t, "p", fiveServers(), Options{Balance: b, HashBoundedLoad: bound})
			allocs := testing.AllocsPerRun(1000, func() {
				s, _ := p.Pick(&Request{Key: "user-1234", ClientIP: "192.0.2.1"}, nil)
				s.Acquire()
			})
			if allocs != 0 {
				t.Errorf("%s (bound %v): %v allocations per Pick, want 0", b, bound, allocs)
			}
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, c := range []struct {
		name  string
		opts  Options
		lease bool
	}{
		{"round_robin", Options{Balance: "round_robin"}, false},
		{"least_conn", Options{Balance: "least_conn"}, true},
		{"hash", Options{Balance: "hash"}, false},
		{"hash_bounded", Options{Balance: "hash", HashBoundedLoad: 1.25}, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := newTestPool(b, "p", fiveServers(), c.opts)
			keys := randomKeys(1024)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				// A fresh Request per pick, as the proxy builds one.
				s, err := p.Pick(&Request{Key: keys[i%len(keys)]}, nil)
				if err != nil {
					b.Fatal(err)
				}
				if c.lease {
					// Keep counts moving, as live tunnels would.
					s.Acquire()
					if i%2 == 0 {
						s.Release()
					}
				}
				i++
			}
		})
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
