package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
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

// listenTCP binds a client listener. The keep-alive settings go on the
// listening socket, which Linux copies to every socket it accepts, rather
// than on each accepted connection: Go would set them there with four
// setsockopt calls per connection, a tenth of a handshake's system calls.
func listenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: setListenerKeepAlive}
	return lc.Listen(context.Background(), "tcp", addr)
}

// setListenerKeepAlive is listenTCP's ListenConfig.Control: it runs on the
// listening socket before bind.
func setListenerKeepAlive(_, _ string, c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		for _, o := range []struct{ level, name, value int }{
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

// retryingListener accepts through failures that pass. fasthttp stops
// serving a listener for good on any accept error but a timeout, and the
// process stays up, so no supervisor would restart it: running out of
// descriptors for a moment (EMFILE) would end accepting for ever. Such
// failures are retried with a growing wait instead. While they last, new
// connections wait in the listen queue; established ones are not
// affected.
type retryingListener struct {
	net.Listener
	logf      func(format string, args ...any)
	closed    chan struct{} // closed by Close: a wait between retries ends
	closeOnce sync.Once

	// The current run of failed accepts. Only the goroutine that calls
	// Accept (fasthttp's Serve loop, one per listener) uses them.
	failures                  int
	firstFailure, lastFailure time.Time
}

func newRetryingListener(ln net.Listener, logf func(format string, args ...any)) *retryingListener {
	return &retryingListener{Listener: ln, logf: logf, closed: make(chan struct{})}
}

// Accept returns the next connection, or an error that will not pass
// (the listener was closed, for one).
func (l *retryingListener) Accept() (net.Conn, error) {
	wait := time.Duration(0)
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if l.failures > 0 && time.Since(l.lastFailure) > acceptRunGap {
				l.endRun()
			}
			return c, nil
		}
		if !isPassingAcceptError(err) {
			return nil, err
		}
		l.failed(err)
		wait = min(max(2*wait, acceptRetryFirst), acceptRetryMax)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-l.closed:
			// The next Accept fails for good.
			t.Stop()
		}
	}
}

// failed counts a failed accept; the first of a run is logged.
func (l *retryingListener) failed(err error) {
	now := time.Now()
	if l.failures > 0 && now.Sub(l.lastFailure) > acceptRunGap {
		l.endRun()
	}
	if l.failures == 0 {
		l.firstFailure = now
		l.logf("accept on %s: %v; retrying, at least every %v: new connections wait in the listen queue until it passes",
			l.Addr(), err, acceptRetryMax)
	}
	l.failures++
	l.lastFailure = now
}

// endRun logs the end of a run of failed accepts, once an accept came
// acceptRunGap after its last failure.
func (l *retryingListener) endRun() {
	l.logf("accept on %s: accepting connections again; %d accepts failed over %v, the last at %s",
		l.Addr(), l.failures, l.lastFailure.Sub(l.firstFailure).Round(time.Millisecond), l.lastFailure.Format(time.TimeOnly))
	l.failures = 0
}

// Close closes the listener and ends a wait between retries.
func (l *retryingListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

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
