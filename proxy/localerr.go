package proxy

import (
	"errors"
	"syscall"

	"github.com/valyala/fasthttp"
	"github.com/wsgate/wsgate/upstream"
)

// isLocalResourceError reports whether err is the gateway itself running
// short of descriptors (its own limit or the system's) or of kernel
// memory. Such a failure says nothing about the peer, and passes once
// connections end.
func isLocalResourceError(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM:
		return true
	}
	return false
}

// dialFailure logs a failed dial of srv and returns the try's failure.
// A dial that failed for want of a local resource is the gateway's
// failure, not the server's: it is logged as local, and the client gets
// 503, which tryServers neither counts against the server nor retries on
// another (which would fail the same way).
func (g *Gateway) dialFailure(rt *Route, srv *upstream.Server, err error) *tryFailure {
	if isLocalResourceError(err) {
		g.errorf("upstream %s server %s: local failure, not counted against the server: %v", rt.Pool.Name, srv.Address, err)
		var errno syscall.Errno
		errors.As(err, &errno)
		reason := "the gateway cannot connect to " + rt.Pool.Name + " now: " + errno.Error() + " (a local failure)"
		return &tryFailure{status: fasthttp.StatusServiceUnavailable, reason: reason, local: true}
	}
	g.errorf("upstream %s server %s: %v", rt.Pool.Name, srv.Address, err)
	return &tryFailure{status: fasthttp.StatusBadGateway, reason: unreachable(rt.Pool.Name, err), cause: dialFailureReason(err)}
}
