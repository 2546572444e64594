// Package shrinkset is a set that gives its memory back after it shrank.
//
// A Go map never frees its buckets when entries are deleted: a gateway
// that once held 9,000 tunnels keeps the tables sized for 9,000 (about
// 100 bytes an entry) for the rest of its life, which is most of the heap
// left after a mass disconnect. A Set rebuilds its map once it holds a
// quarter of the most it held, so the cost is amortized over the deletes
// that got it there.
package shrinkset

// rebuildMin is the peak below which a set never rebuilds: small maps are
// not worth copying.
const rebuildMin = 1024

// Set is a set of K. The zero value is not usable; call New. It is not
// safe for concurrent use.
type Set[K comparable] struct {
	m    map[K]struct{}
	peak int // the most entries since the map was made
}

// New returns an empty set.
func New[K comparable]() *Set[K] { return &Set[K]{m: map[K]struct{}{}} }

// Add puts k in the set.
func (s *Set[K]) Add(k K) {
	s.m[k] = struct{}{}
	s.peak = max(s.peak, len(s.m))
}

// Delete removes k from the set, and rebuilds the map when it has shrunk to
// a quarter of its peak.
func (s *Set[K]) Delete(k K) {
	delete(s.m, k)
	if s.peak >= rebuildMin && len(s.m) <= s.peak/4 {
		m := make(map[K]struct{}, len(s.m))
		for k := range s.m {
			m[k] = struct{}{}
		}
		s.m, s.peak = m, len(m)
	}
}

// Len is the number of entries.
func (s *Set[K]) Len() int { return len(s.m) }

// All yields every entry. The set must not be changed by the loop's body
// except by deleting the entry it was given.
func (s *Set[K]) All(yield func(K) bool) {
	for k := range s.m {
		if !yield(k) {
			return
		}
	}
}
