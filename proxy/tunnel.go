package proxy

import "sync"

// relayBufferSize is the size of the buffers borrowed to move bytes on a
// request's goroutine: a response body, an upstream's handshake answer, a
// client's bytes buffered at the switch.
const relayBufferSize = 32 << 10

var relayBuffers = sync.Pool{New: func() any { b := make([]byte, relayBufferSize); return &b }}

// Closer names who ended a tunnel, for the access log.
type Closer string

// The ways a tunnel ends.
const (
	ClosedByClient   Closer = "client"
	ClosedByUpstream Closer = "upstream"
	ClosedIdle       Closer = "idle"
	ClosedDrain      Closer = "drain"
	// ClosedReload: a reload took the tunnel's server or route out, and
	// the drain timeout after it passed.
	ClosedReload Closer = "reload"
	// ClosedInternal: the gateway failed the tunnel (it could not hand it
	// to the relay, say); the error log says why.
	ClosedInternal Closer = "internal"
)
