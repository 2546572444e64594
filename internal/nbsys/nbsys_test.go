package nbsys

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// A non-blocking connect to a loopback listener, then accept4 on a
// listening socket, give the addresses Go's own calls give: the byte order
// of ports and the IPv6 layout are right, and read and write move bytes.
func TestConnectAcceptReadWrite(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			host := "127.0.0.1"
			if network == "tcp6" {
				host = "[::1]"
			}
			ln, err := net.Listen(network, host+":0")
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer ln.Close()
			ap := ln.Addr().(*net.TCPAddr).AddrPort()
			var sa syscall.Sockaddr
			family := syscall.AF_INET
			if ap.Addr().Is4() {
				sa = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
			} else {
				family = syscall.AF_INET6
				sa = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
			}
			fd, err := Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer Close(fd)
			if err := Connect(fd, sa); err != nil && err != syscall.EINPROGRESS {
				t.Fatal(err)
			}
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The accepted side's peer is the socket made here.
			local, err := syscall.Getsockname(fd)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := c.RemoteAddr().(*net.TCPAddr).AddrPort(), addrPort(local); got != want {
				t.Fatalf("the listener saw %v, the socket is %v", got, want)
			}
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 8)
			n := readWithin(t, fd, buf)
			if string(buf[:n]) != "ping" {
				t.Fatalf("read %q", buf[:n])
			}
			if n, err := Write(fd, []byte("pong")); n != 4 || err != nil {
				t.Fatalf("write: %d %v", n, err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := c.Read(buf); string(buf[:n]) != "pong" {
				t.Fatalf("the far end read %q %v", buf[:n], err)
			}

			// accept4 on a raw listening socket reports the peer as Go does.
			lfd, err := Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer Close(lfd)
			var bindTo syscall.Sockaddr = &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
			if family == syscall.AF_INET6 {
				bindTo = &syscall.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}
			}
			if err := syscall.Bind(lfd, bindTo); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Listen(lfd, 8); err != nil {
				t.Fatal(err)
			}
			lsa, _ := syscall.Getsockname(lfd)
			d, err := net.Dial(network, addrPort(lsa).String())
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			var afd int
			var peer syscall.Sockaddr
			for deadline := time.Now().Add(10 * time.Second); ; {
				afd, peer, err = Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
				if err != syscall.EAGAIN || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer Close(afd)
			if got, want := addrPort(peer), d.LocalAddr().(*net.TCPAddr).AddrPort(); got != want {
				t.Fatalf("accept4 gave the peer %v, it is %v", got, want)
			}
		})
	}
}

func addrPort(sa syscall.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// readWithin reads from a non-blocking fd until bytes come, within a bound.
func readWithin(t *testing.T, fd int, buf []byte) int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		n, err := Read(fd, buf)
		if err == syscall.EAGAIN {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Fatal("nothing to read within 10s")
	return 0
}
