package proxy

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// A client connection has TCP keep-alive on, 15 s idle, 15 s apart, 9
// probes, and no Nagle delay, though the settings are made once on the
// listening socket: the event loops accept with accept4(2), which sets
// nothing (Go's Accept would set no-delay itself).
func TestAcceptedConnsKeepAlive(t *testing.T) {
	ln, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	lrc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	lfd := -1
	lrc.Control(func(fd uintptr) { lfd = int(fd) })
	// net.Dial returned, so the connection is queued; poll(2) waits for
	// it all the same, within a bound.
	if _, err := unix.Poll([]unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}, 10000); err != nil {
		t.Fatal(err)
	}
	accepted, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(accepted)
	for _, o := range []struct {
		what        string
		level, name int
		want        int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	} {
		var got int
		var gerr error
		got, gerr = unix.GetsockoptInt(accepted, o.level, o.name)
		if gerr != nil {
			t.Fatalf("%s: %v", o.what, gerr)
		}
		if got != o.want {
			t.Errorf("accepted conn's %s is %d, want %d", o.what, got, o.want)
		}
	}
}
