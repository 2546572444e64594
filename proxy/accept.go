package proxy

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Client connections get TCP keep-alive probes after 15 s idle, every 15 s,
// 9 unanswered ones ending the connection: Go's defaults for accepted
// connections (net.ListenConfig.KeepAlive).
const (
	clientKeepAliveIdle     = 15 // seconds
	clientKeepAliveInterval = 15 // seconds
	clientKeepAliveCount    = 9
)

// listenTCP binds a client listener. The keep-alive and no-delay settings
// go on the listening socket, which Linux copies to every socket it
// accepts, rather than on each accepted connection: that would be five
// setsockopt calls per connection, a tenth of a handshake's system calls.
func listenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: setListenerOptions}
	return lc.Listen(context.Background(), "tcp", addr)
}

// setListenerOptions is listenTCP's ListenConfig.Control: it runs on the
// listening socket before bind.
func setListenerOptions(_, _ string, c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		for _, o := range []struct{ level, name, value int }{
			{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, clientKeepAliveIdle},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, clientKeepAliveInterval},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, clientKeepAliveCount},
		} {
			if err = unix.SetsockoptInt(int(fd), o.level, o.name, o.value); err != nil {
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// The waits between failed accepts: net/http's, 5 ms doubling to 1 s.
const (
	acceptRetryFirst = 5 * time.Millisecond
	acceptRetryMax   = time.Second
)

// acceptRunGap: failed accepts closer together than this are one run,
// logged once. A gateway at its descriptor limit alternates failed and
// successful accepts as connections come and go; a line for each would
// flood the log just when it matters.
const acceptRunGap = 10 * time.Second

// isPassingAcceptError reports whether a failed accept may succeed when
// tried again: the gateway short of descriptors or memory, which passes
// as connections end, or a connection that failed while it waited in the
// queue (accept(2) passes those on; the next one is fine).
func isPassingAcceptError(err error) bool {
	if isLocalResourceError(err) {
		return true
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EPERM, syscall.EPROTO,
		syscall.ENETDOWN, syscall.ENOPROTOOPT, syscall.EHOSTDOWN, syscall.ENONET,
		syscall.EHOSTUNREACH, syscall.EOPNOTSUPP, syscall.ENETUNREACH:
		return true
	}
	return false
}
