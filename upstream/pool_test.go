package upstream

import (
	"errors"
	"testing"
)

func TestPickSmoothWeighted(t *testing.T) {
	a, b, c := &Server{Address: "a", Weight: 5}, &Server{Address: "b", Weight: 1}, &Server{Address: "c", Weight: 1}
	p := NewPool("p", []*Server{a, b, c}, Options{})
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
	p := NewPool("p", servers, Options{})
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
	p := NewPool("p", []*Server{a, b}, Options{})
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
