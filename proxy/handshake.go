package proxy

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"strconv"

	"github.com/valyala/fasthttp"
)

// websocketGUID is the constant RFC 6455 section 1.3 appends to the key.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey returns the Sec-WebSocket-Accept value an RFC 6455 server must
// answer to the client's Sec-WebSocket-Key.
func AcceptKey(key string) string { return string(appendAcceptKey(nil, key)) }

// appendAcceptKey appends AcceptKey(key) to dst. With room in dst and a
// key of a valid size (24 bytes) it allocates nothing.
func appendAcceptKey(dst []byte, key string) []byte {
	var in [64]byte
	sum := sha1.Sum(append(append(in[:0], key...), websocketGUID...))
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// isUpgrade reports whether a request asks to switch to WebSocket: its
// Connection header lists the token "upgrade" and its Upgrade header names
// "websocket", both case-insensitively. Headers may repeat.
func isUpgrade(h *fasthttp.RequestHeader) bool {
	var conn, upg bool
	h.VisitAll(func(k, v []byte) {
		switch {
		case bytes.EqualFold(k, []byte("Connection")):
			conn = conn || hasToken(v, "upgrade")
		case bytes.EqualFold(k, []byte("Upgrade")):
			upg = upg || hasToken(v, "websocket")
		}
	})
	return conn && upg
}

// hasToken reports whether a comma-separated header value contains token,
// compared case-insensitively and ignoring surrounding spaces and tabs.
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		var item []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			item, v = v, nil
		}
		if bytes.EqualFold(bytes.Trim(item, " \t"), []byte(token)) {
			return true
		}
	}
	return false
}

// handshakeError is a client handshake the gateway refuses before any
// upstream is involved.
type handshakeError struct {
	status int
	reason string
}

// checkClientHandshake validates an upgrade request against RFC 6455
// section 4.2.1 and returns the client's key, or why it is refused. It
// also refuses what the backend could read otherwise than the gateway
// checked and routed it: header lines the gateway forwards as they came
// but a backend may split or join differently, a second key or version
// (only one was checked), and a target that cannot be sent in origin form.
func checkClientHandshake(h *fasthttp.RequestHeader) (key string, herr *handshakeError) {
	if !h.IsGet() {
		return "", &handshakeError{fasthttp.StatusBadRequest, "websocket handshake must use GET, not " + string(h.Method())}
	}
	if !h.IsHTTP11() {
		return "", &handshakeError{fasthttp.StatusBadRequest, "websocket handshake needs HTTP/1.1, got " + string(h.Protocol())}
	}
	if !forwardableTarget(h.RequestURI()) {
		return "", &handshakeError{fasthttp.StatusBadRequest, "websocket handshake target must be a path (/chat) or an absolute URI (http://host/chat)"}
	}
	if problem := headerLineProblem(h.RawHeaders()); problem != "" {
		return "", &handshakeError{fasthttp.StatusBadRequest, "websocket handshake with " + problem}
	}
	// RFC 6455 section 4.1: the handshake is a GET without a body. What
	// follows its head is the client's first frames, so a body would
	// reach the backend as frames, and the backend, told of a body by a
	// Content-Length, would read frames as that body.
	if h.ContentLength() > 0 {
		return "", &handshakeError{fasthttp.StatusBadRequest, "websocket handshake must not carry a body (Content-Length " + strconv.Itoa(h.ContentLength()) + ")"}
	}
	if hasRawHeader(h.RawHeaders(), "Transfer-Encoding") {
		return "", &handshakeError{fasthttp.StatusBadRequest, "websocket handshake must not carry a body (Transfer-Encoding)"}
	}
	v, n := onlyFold(h, "Sec-WebSocket-Version")
	if n > 1 {
		return "", &handshakeError{fasthttp.StatusBadRequest, "more than one Sec-WebSocket-Version"}
	}
	if string(v) != "13" {
		if len(v) == 0 {
			return "", &handshakeError{fasthttp.StatusUpgradeRequired, "missing Sec-WebSocket-Version; this gateway speaks version 13"}
		}
		return "", &handshakeError{fasthttp.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version " + string(v) + "; this gateway speaks version 13"}
	}
	raw, n := onlyFold(h, "Sec-WebSocket-Key")
	if n > 1 {
		return "", &handshakeError{fasthttp.StatusBadRequest, "more than one Sec-WebSocket-Key"}
	}
	if len(raw) == 0 {
		return "", &handshakeError{fasthttp.StatusBadRequest, "missing Sec-WebSocket-Key"}
	}
	// The key must be the base64 encoding of exactly 16 bytes: 24 characters
	// ending in "==", decoded on the stack.
	valid := len(raw) == 24
	if valid {
		var decoded [18]byte
		n, err := base64.StdEncoding.Decode(decoded[:], raw)
		valid = err == nil && n == 16
	}
	if !valid {
		return "", &handshakeError{fasthttp.StatusBadRequest, "Sec-WebSocket-Key must be base64 of 16 bytes"}
	}
	return string(raw), nil
}

// forwardableTarget reports whether a request target can be sent
// upstream in origin form (see originForm): a path, or an absolute URI
// whose host, which the route was chosen by, can be the Host sent with it
// (RFC 9110 section 4.2.1 has no http URI of an empty host).
func forwardableTarget(target []byte) bool {
	_, absolute, ok := originForm(target)
	if ok && absolute {
		var u fasthttp.URI
		ok = u.Parse(nil, target) == nil && len(u.Host()) > 0
	}
	return ok
}

// hasRawHeader reports whether the raw head block holds a header called
// name in any spelling. fasthttp keeps no trace of some it parsed
// (Transfer-Encoding: identity) among the headers it visits.
func hasRawHeader(raw []byte, name string) bool {
	found := false
	forEachRawHeader(raw, func(n, _, _ []byte) {
		found = found || bytes.EqualFold(n, []byte(name))
	})
	return found
}

// onlyFold returns the first value of the header called name in any
// spelling, and how many such headers there are.
func onlyFold(h *fasthttp.RequestHeader, name string) (first []byte, n int) {
	h.VisitAll(func(k, v []byte) {
		if bytes.EqualFold(k, []byte(name)) {
			if n == 0 {
				first = v
			}
			n++
		}
	})
	return first, n
}

// peekFold returns the first value of the header called name in any
// spelling. The server keeps names as the client sent them, and fasthttp's
// Peek then compares byte for byte; "sec-websocket-key" is as valid as
// "Sec-WebSocket-Key".
func peekFold(h *fasthttp.RequestHeader, name string) []byte {
	var found []byte
	h.VisitAll(func(k, v []byte) {
		if found == nil && bytes.EqualFold(k, []byte(name)) {
			found = v
		}
	})
	return found
}
