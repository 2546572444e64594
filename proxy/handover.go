package proxy

import (
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// handoverSlot holds what a request handler leaves for its hijack handler
// (an upstream conn, a server's lease, a count a drain waits on) until the
// hijack handler takes it. It lives in the client's conn, which owns the
// handover meanwhile.
//
// fasthttp (v1.74.0, Server.serveConn) does not always run a hijack
// handler the request handler registered: when flushing an answer still
// buffered for an earlier pipelined request fails (the client went away),
// or when c.SetDeadline fails (the conn was closed under the request,
// as a Shutdown that takes a keep-alive conn for idle just as its next
// request arrives does), it ends the conn instead and closes it. With a
// WriteTimeout, or without HijackSetNoResponse, more failures skip it
// (neither is used here). The conn's Close then runs the handover's
// release, so what it holds does not leak.
type handoverSlot struct{ release atomic.Pointer[func()] }

// hold gives release to the slot, to run at the conn's close unless a
// hijack handler takes it first.
func (s *handoverSlot) hold(release func()) { s.release.Store(&release) }

// take hands the held release to the hijack handler, which owns the
// handover from then on. false: the conn was closed first and the
// handover is released already.
func (s *handoverSlot) take() bool { return s.release.Swap(nil) != nil }

// closed releases a handover no hijack handler took; the conn is closing.
func (s *handoverSlot) closed() {
	if release := s.release.Swap(nil); release != nil {
		(*release)()
	}
}

// handOver makes ctx's client conn the owner of a handover until the
// hijack handler calls take; release ends what it holds. Every conn the
// gateway serves is a clientConn or TLS over one (wrapAccepted); a conn
// of any other kind would have no slot, and its handover would be the
// hijack handler's alone, take reporting true.
func handOver(ctx *fasthttp.RequestCtx, release func()) (take func() bool) {
	cc := clientConnOf(ctx)
	if cc == nil {
		return func() bool { return true }
	}
	cc.handover.hold(release)
	return cc.handover.take
}
