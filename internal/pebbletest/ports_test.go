package pebbletest

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A refusing port refuses connections, and a listener on port 0 is never
// given it while the test runs.
func TestRefusingPort(t *testing.T) {
	port := RefusingPort(t)
	_, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial to the refusing port: %v, want connection refused", err)
	}
	for range 200 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		got := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if got == port {
			t.Fatalf("a listener on port 0 was given the refusing port %d", port)
		}
	}
}
