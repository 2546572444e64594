// Package nbsys makes the system calls of the relay's event loops without
// telling Go's scheduler: syscall.RawSyscall instead of syscall.Syscall.
//
// Every call here is made on a non-blocking descriptor (or is one that
// never waits, as epoll_wait with a zero timeout), so it returns at once,
// or after the kernel's own work on loopback, a few microseconds. Through
// syscall.Syscall each such call marks its P as in a system call; the
// runtime's monitor thread then keeps waking every 20 µs to take such Ps
// back, and hands them to other threads: on a handshake load that was 2.6
// nanosleep calls and a share of the futex calls per handshake, plus the
// scheduler's entry and exit work around each of the 40 calls. A call
// here holds its P for its length instead, as any Go code does.
//
// Never use it for a call that may wait.
package nbsys

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func errno(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Read is read(2) on a non-blocking descriptor.
func Read(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// Write is write(2) on a non-blocking descriptor.
func Write(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// EpollPoll is epoll_wait(2) with a zero timeout: it never waits.
func EpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// EpollCtl is epoll_ctl(2).
func EpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errno(e)
}

// Close is close(2) of a socket without SO_LINGER, which does not wait.
func Close(fd int) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
	return errno(e)
}

// Shutdown is shutdown(2).
func Shutdown(fd, how int) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
	return errno(e)
}

// SetsockoptInt is setsockopt(2) with an int value.
func SetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	_, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
	return errno(e)
}

// Socket is socket(2); pass SOCK_NONBLOCK.
func Socket(domain, typ, proto int) (int, error) {
	fd, _, e := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(domain), uintptr(typ), uintptr(proto))
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// Connect is connect(2) of a non-blocking socket to an IPv4 or IPv6
// address: it returns EINPROGRESS rather than wait.
func Connect(fd int, sa syscall.Sockaddr) error {
	var raw syscall.RawSockaddrAny
	var size uintptr
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		r := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&raw))
		r.Family = syscall.AF_INET
		r.Port = htons(sa.Port)
		r.Addr = sa.Addr
		size = syscall.SizeofSockaddrInet4
	case *syscall.SockaddrInet6:
		r := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&raw))
		r.Family = syscall.AF_INET6
		r.Port = htons(sa.Port)
		r.Scope_id = sa.ZoneId
		r.Addr = sa.Addr
		size = syscall.SizeofSockaddrInet6
	default:
		return syscall.EAFNOSUPPORT
	}
	_, _, e := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&raw)), size)
	return errno(e)
}

// Accept4 is accept4(2) on a non-blocking listening socket; the peer's
// address comes back as an IPv4 or IPv6 address, or nil for another kind.
func Accept4(fd, flags int) (int, syscall.Sockaddr, error) {
	var raw syscall.RawSockaddrAny
	size := uint32(syscall.SizeofSockaddrAny)
	nfd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&raw)), uintptr(unsafe.Pointer(&size)), uintptr(flags), 0, 0)
	if e != 0 {
		return -1, nil, e
	}
	switch raw.Addr.Family {
	case syscall.AF_INET:
		r := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&raw))
		return int(nfd), &syscall.SockaddrInet4{Port: ntohs(r.Port), Addr: r.Addr}, nil
	case syscall.AF_INET6:
		r := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&raw))
		return int(nfd), &syscall.SockaddrInet6{Port: ntohs(r.Port), ZoneId: r.Scope_id, Addr: r.Addr}, nil
	}
	return int(nfd), nil, nil
}

// htons puts a port in network byte order as RawSockaddrInet*.Port holds it.
func htons(port int) uint16 {
	var b [2]byte
	b[0], b[1] = byte(port>>8), byte(port)
	return *(*uint16)(unsafe.Pointer(&b))
}

func ntohs(p uint16) int {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return int(b[0])<<8 | int(b[1])
}
