package proxy

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// boundListener is one listening socket. It lives as long as its address
// stays in the configuration: a reload that keeps the address keeps the
// socket, so no connection is refused while the configuration changes.
//
// The relay's event loops accept its connections (loopAcceptor). Those
// they do not carry to a tunnel themselves go to the fasthttp server
// serving the socket at that moment, through a serverView. A reload
// that changes what a fasthttp.Server fixes for its life (the head read
// timeout, the largest head) puts a new server in front of the same
// socket; the old one stops taking connections and finishes the requests
// it has.
type boundListener struct {
	key string // the listener's key in a generation (listenerKey)
	ln  net.Listener
	// acceptor accepts on the relay's loops (watchListener); set before
	// anything may close the listener.
	acceptor *loopAcceptor
	conns    chan net.Conn
	closed   chan struct{} // closed by close: the accept loop ends
	once     sync.Once
	// info is the listener's settings in service; after a reload removed
	// it, the last ones, for the requests its connections still make.
	info atomic.Pointer[listenerInfo]

	// server and view are the server taking the socket's connections and
	// its view of the socket; Gateway.lmu guards them.
	server   *fasthttp.Server
	view     *serverView
	settings serverSettings // what server was made with
}

// serverSettings are what a fasthttp.Server fixes when it is made.
type serverSettings struct {
	headTimeout    int64 // nanoseconds: timeouts.handshake
	maxHeaderBytes int
}

func newBoundListener(key string, ln net.Listener) *boundListener {
	return &boundListener{key: key, ln: ln, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// close closes the socket: new connections are refused. Connections
// already accepted are their servers'.
func (b *boundListener) close() {
	b.once.Do(func() {
		close(b.closed)
		if b.acceptor != nil {
			b.acceptor.forget() // no loop may watch the descriptor once closed
		}
		b.ln.Close()
	})
}

// newView returns a view of b for one server.
func (b *boundListener) newView() *serverView {
	return &serverView{b: b, closed: make(chan struct{})}
}

// serverView is the net.Listener one fasthttp.Server serves: Accept takes
// the socket's next connection, and Close (fasthttp's Shutdown calls it)
// ends this server's part without closing the socket, which another
// server may go on serving.
type serverView struct {
	b      *boundListener
	closed chan struct{}
	once   sync.Once
}

func (v *serverView) Accept() (net.Conn, error) {
	select {
	case <-v.closed:
		// Closed: whatever waits goes to the server that replaced this
		// one, not to one shutting down.
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-v.b.conns:
		return c, nil
	case <-v.closed:
		return nil, net.ErrClosed
	case <-v.b.closed:
		return nil, net.ErrClosed
	}
}

func (v *serverView) Close() error {
	v.once.Do(func() { close(v.closed) })
	return nil
}

func (v *serverView) Addr() net.Addr { return v.b.ln.Addr() }
