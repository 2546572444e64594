package upstream

import (
	"fmt"
	"math"
	"strings"
)

// balancer chooses one server among Pick's candidates: usable, untried,
// not full servers of one tier, never an empty list. Pick calls it with
// the pool's mutex held, so a balancer keeps its state (and the servers'
// current counters) without locks of its own. It may reorder cands, which
// is Pick's scratch list, and must not allocate per call.
//
// It gets the request's hash key rather than the *Request: whatever goes
// through an interface call escapes, and the proxy's Request would then
// be allocated on the heap for every connection.
type balancer interface {
	pick(cands []*Server, key string) *Server
}

// balancers are the balancers by the names Options.Balance gives them:
// the one table of names, which the configuration checks against too
// (Balancers).
var balancers = []struct {
	name string
	new  func(Options) balancer
}{
	{"least_conn", func(Options) balancer { return leastConn{} }},
	{"round_robin", func(Options) balancer { return roundRobin{} }},
	{"hash", func(opts Options) balancer {
		bound := opts.HashBoundedLoad
		if bound > 0 && bound < 1 {
			bound = 1
		}
		return &rendezvous{bound: bound}
	}},
}

// Balancers returns the names Options.Balance accepts besides "".
func Balancers() []string {
	names := make([]string, len(balancers))
	for i, b := range balancers {
		names[i] = b.name
	}
	return names
}

// newBalancer returns a new balancer, with fresh state, of the kind
// opts.Balance names.
func newBalancer(opts Options) (balancer, error) {
	name := opts.Balance
	if name == "" {
		name = "round_robin"
	}
	for _, b := range balancers {
		if b.name == name {
			return b.new(opts), nil
		}
	}
	return nil, fmt.Errorf("balance %q is unknown (known: %s)", opts.Balance, strings.Join(Balancers(), ", "))
}

// roundRobin is nginx's smooth weighted round robin: over any run of picks
// each server gets its weight's share, interleaved rather than in bursts
// (weights 5,1,1 give a a b a c a a).
type roundRobin struct{}

func (roundRobin) pick(cands []*Server, _ string) *Server { return smooth(cands) }

// smooth is one step of smooth weighted round robin over cands: each
// server's counter grows by its weight, the highest wins and pays back the
// total. Servers outside cands (tried, full, down) keep their counters, as
// in nginx.
func smooth(cands []*Server) *Server {
	var best *Server
	total := 0
	for _, s := range cands {
		w := s.cfg().Weight
		s.current += w
		total += w
		if best == nil || s.current > best.current {
			best = s
		}
	}
	best.current -= total
	return best
}

// leastConn picks the server with the fewest leases per unit of weight:
// WebSocket tunnels live for hours, so the count of live ones, not the
// number of past picks, is what tells how loaded a server is.
//
// Ties go through smooth weighted round robin among the tied servers, as
// in nginx's least_conn. Rotating the tie-breaker is what makes equal
// servers share when leases are short (each pick sees equal counts), and
// doing it by weight keeps weights meaningful then too: weights 2:1 with
// equal counts give 2/3 to the heavier server rather than half.
type leastConn struct{}

func (leastConn) pick(cands []*Server, _ string) *Server {
	// Gather the tied best servers at the front of cands in one pass,
	// loading each lease count once. Ratios compare as cross products
	// (a/wa < b/wb ⇔ a·wb < b·wa): exact, and no floats.
	tied := 0
	var bestActive, bestWeight int64
	for _, s := range cands {
		a, w := s.Active(), int64(s.cfg().Weight)
		switch {
		case tied == 0 || a*bestWeight < bestActive*w:
			tied, bestActive, bestWeight = 0, a, w
			fallthrough
		case a*bestWeight == bestActive*w:
			// tied never exceeds the loop index: no unread entry is
			// overwritten.
			cands[tied] = s
			tied++
		}
	}
	if tied == 1 {
		return cands[0]
	}
	return smooth(cands[:tied])
}

// rendezvous is weighted rendezvous (highest random weight) hashing: each
// server scores -weight/ln(u) where u in (0,1) is a hash of the key and the
// server's address, and the best score wins. Removing a server moves only
// the keys it won; adding one takes only the keys it now wins; a server's
// expected share is its weight's. The score depends on the key and the
// address alone, not on server order or process state, so gateway
// processes with the same servers agree on every key without talking.
//
// With bound > 0 (consistent hashing with bounded loads) servers are
// walked in descending score and the first whose lease count stays within
// ceil(bound × mean) after this pick wins: a hot key spills to its next
// servers instead of piling onto one.
type rendezvous struct {
	bound  float64
	scores []float64 // scratch for the bounded walk, grown as the pool grows
}

func (h *rendezvous) pick(cands []*Server, key string) *Server {
	kh := fnvString(fnvOffset, key)
	if h.bound == 0 {
		best, bestScore := cands[0], hashScore(kh, cands[0])
		for _, s := range cands[1:] {
			if sc := hashScore(kh, s); outranks(sc, s, bestScore, best) {
				best, bestScore = s, sc
			}
		}
		return best
	}

	if cap(h.scores) < len(cands) {
		h.scores = make([]float64, len(cands))
	}
	scores := h.scores[:len(cands)]
	var total int64
	for i, s := range cands {
		scores[i] = hashScore(kh, s)
		total += s.Active()
	}
	// The +1 counts this pick, so that the cap is never below what the
	// least loaded server reaches by taking it: with bound ≥ 1 some
	// server always fits.
	limit := int64(math.Ceil(h.bound * float64(total+1) / float64(len(cands))))
	var first *Server
	for range cands {
		// Selection by repeated maximum: lists are short and the walk
		// usually stops at the first or second server, so sorting all
		// of them would be wasted work.
		bi := -1
		for i, s := range cands {
			if scores[i] > 0 && (bi < 0 || outranks(scores[i], s, scores[bi], cands[bi])) {
				bi = i
			}
		}
		s := cands[bi]
		if first == nil {
			first = s
		}
		if s.Active()+1 <= limit {
			return s
		}
		scores[bi] = 0 // scores are positive: 0 marks a server passed over
	}
	// Only lease counts moving under us (Active is read without the
	// pool's mutex) can leave every server over the cap: the key's own
	// server is then the least surprising answer.
	return first
}

// outranks reports whether a server scoring sa beats one scoring sb. Equal
// scores (all but impossible with 53-bit hashes) are settled by address,
// so that the answer never depends on the order of the server list.
func outranks(sa float64, a *Server, sb float64, b *Server) bool {
	return sa > sb || sa == sb && a.Address < b.Address
}

// hashScore is server s's rendezvous score for the key whose FNV-1a state
// is kh: the hash of key and address, mapped to u in (0,1), gives
// -weight/ln(u). Taking the best of these scores picks each server with
// probability proportional to its weight (the largest of exponential
// variables of rates 1/weight).
//
// FNV-1a is fixed, unlike hash/maphash whose seed differs per process; the
// splitmix64 finalizer then spreads FNV's weak low bits over all 64, so
// that servers whose addresses differ in one character score
// independently.
func hashScore(kh uint64, s *Server) float64 {
	h := mix64(fnvString(fnvByte(kh, 0), s.Address))
	// 52 bits plus one half: exact in a float64 and strictly inside
	// (0,1), so the logarithm is finite and negative.
	u := (float64(h>>12) + 0.5) / (1 << 52)
	return -float64(s.cfg().Weight) / math.Log(u)
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvByte(h uint64, b byte) uint64 { return (h ^ uint64(b)) * fnvPrime }

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = fnvByte(h, s[i])
	}
	return h
}

// mix64 is splitmix64's finalizer: every input bit flips each output bit
// with probability about one half.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
