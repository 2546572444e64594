package shrinkset

import (
	"runtime"
	"testing"
)

func TestAddDeleteAcrossRebuilds(t *testing.T) {
	s := New[int]()
	const n = 10 * rebuildMin
	for i := range n {
		s.Add(i)
	}
	// Delete all but every 16th: the map is rebuilt at least once.
	for i := range n {
		if i%16 != 0 {
			s.Delete(i)
		}
	}
	if s.Len() != n/16 {
		t.Fatalf("Len = %d, want %d", s.Len(), n/16)
	}
	seen := map[int]bool{}
	for k := range s.All {
		if k%16 != 0 || seen[k] {
			t.Fatalf("All yielded %d (seen before: %v)", k, seen[k])
		}
		seen[k] = true
	}
	if len(seen) != n/16 {
		t.Fatalf("All yielded %d entries, want %d", len(seen), n/16)
	}
}

// A loop that deletes every entry it is given (how the relay closes all its
// tunnels) sees each entry once, though the map is rebuilt under it.
func TestDeleteWhileIterating(t *testing.T) {
	s := New[int]()
	const n = 8 * rebuildMin
	for i := range n {
		s.Add(i)
	}
	seen := map[int]bool{}
	for k := range s.All {
		if seen[k] {
			t.Fatalf("%d yielded twice", k)
		}
		seen[k] = true
		s.Delete(k)
	}
	if len(seen) != n || s.Len() != 0 {
		t.Fatalf("yielded %d of %d, %d left", len(seen), n, s.Len())
	}
}

// The point of the package: after most entries are gone, the memory of
// the big map is garbage. A plain map keeps it.
func TestShrinkingFreesMemory(t *testing.T) {
	const n = 200_000
	live := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	s := New[[2]uint64]()
	for i := range uint64(n) {
		s.Add([2]uint64{i, i})
	}
	full := live()
	for i := range uint64(n - 10) {
		s.Delete([2]uint64{i, i})
	}
	after := live()
	runtime.KeepAlive(s)
	// 200,000 16-byte keys take several MB in a map; 10 take nothing.
	if full < after+2<<20 {
		t.Fatalf("live heap %d KiB full, %d KiB after deleting all but 10: the map kept its size", full>>10, after>>10)
	}

	plain := map[[2]uint64]struct{}{}
	for i := range uint64(n) {
		plain[[2]uint64{i, i}] = struct{}{}
	}
	fullPlain := live()
	for i := range uint64(n - 10) {
		delete(plain, [2]uint64{i, i})
	}
	if afterPlain := live(); fullPlain > afterPlain+2<<20 {
		t.Logf("a plain map did give memory back (%d → %d KiB); the Go runtime changed", fullPlain>>10, afterPlain>>10)
	}
	runtime.KeepAlive(plain)
}
