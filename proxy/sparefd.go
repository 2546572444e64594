package proxy

import (
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// spareFD is a descriptor the gateway holds for the moment it runs out:
// handing a connection an event loop accepted to the HTTP server makes a
// Go conn of its socket, and Go can only do that with a duplicate, one
// more descriptor for an instant. At the descriptor limit that duplicate
// would fail where accepting the connection did not, and the client
// would get a bare close instead of its answer. Giving the spare back
// for that instant lets the hand-over through; the spare is taken again
// at the next hand-over that finds a descriptor free. (libuv keeps one
// for accept(2) for the same reason.)
type spareFD struct {
	mu sync.Mutex
	fd int // -1 while given back
}

func newSpareFD() *spareFD {
	s := &spareFD{fd: -1}
	s.take()
	return s
}

// take opens the spare if it is not held. s.mu is held, or s is new.
func (s *spareFD) take() {
	if s.fd < 0 {
		if fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			s.fd = fd
		}
	}
}

// with runs fn, and once more with the spare given back if fn failed for
// want of a descriptor. The caller refills the spare once it has closed
// a descriptor of its own.
func (s *spareFD) with(fn func() error) error {
	err := fn()
	if !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
		err = fn()
	}
	return err
}

// refill takes the spare again if it was given back.
func (s *spareFD) refill() {
	if s.missing() {
		s.mu.Lock()
		s.take()
		s.mu.Unlock()
	}
}

// missing reports whether the spare was given back and not taken again.
// (A lock per hand-over: hand-overs are not the loops' fast path.)
func (s *spareFD) missing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fd < 0
}

// close gives the spare back for good (the gateway stopped).
func (s *spareFD) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}
