// Package wsframe follows the frame boundaries of a WebSocket (RFC 6455) byte
// stream that a proxy relays unchanged. It parses frame headers only and
// counts payload bytes down; it never unmasks, copies or modifies payload.
// Knowing the boundaries is what lets a relay inject a frame of its own
// (Close on drain) without corrupting the stream.
package wsframe

import (
	"encoding/binary"
	"errors"
)

// ErrProtocol matches (via errors.Is) every protocol violation reported by
// Feed. ErrMessageTooBig is not one: it is the gateway's policy, answered
// with Close 1009 rather than 1002.
var ErrProtocol = errors.New("wsframe: protocol violation")

// violation is a protocol-violation sentinel. A fixed set of values, rather
// than fmt.Errorf wrapping, keeps Feed free of allocations.
type violation struct{ msg string }

func (v *violation) Error() string { return "wsframe: protocol violation: " + v.msg }
func (v *violation) Unwrap() error { return ErrProtocol }

// Errors returned by Feed.
var (
	// ErrMask: a client frame without the mask bit, or a server frame with it (RFC 6455 5.1).
	ErrMask error = &violation{"mask bit wrong for this direction"}
	// ErrReservedOpcode: opcode 0x3-0x7 or 0xB-0xF.
	ErrReservedOpcode error = &violation{"reserved opcode"}
	// ErrControlTooLong: a control frame with more than 125 bytes of payload.
	ErrControlTooLong error = &violation{"control frame payload over 125 bytes"}
	// ErrControlFragmented: a control frame without FIN.
	ErrControlFragmented error = &violation{"fragmented control frame"}
	// ErrContinuation: a continuation frame with no message open, or a new
	// text/binary frame while a fragmented message is still open.
	ErrContinuation error = &violation{"unexpected continuation or data frame"}
	// ErrLength: a 64-bit payload length with the most significant bit set.
	ErrLength error = &violation{"64-bit payload length with top bit set"}
	// ErrMessageTooBig: the data message exceeds the tracker's maxMessage.
	ErrMessageTooBig = errors.New("wsframe: message exceeds size limit")
)

// errs maps Tracker.err to the error Feed returns; index 0 means no error.
// The tracker stores the index because an error value would be a pointer.
var errs = [...]error{nil, ErrMask, ErrReservedOpcode, ErrControlTooLong,
	ErrControlFragmented, ErrContinuation, ErrLength, ErrMessageTooBig}

const (
	errNone uint8 = iota
	errMask
	errReservedOpcode
	errControlTooLong
	errControlFragmented
	errContinuation
	errLength
	errMessageTooBig
)

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	finBit  = 0x80
	maskBit = 0x80

	maxHeader         = 14 // 2 + 8 (64-bit length) + 4 (mask key)
	maxControlPayload = 125
)

// Tracker follows the frames of one direction of a WebSocket connection. The zero value is not ready; use New.
//
// It holds no pointers and no slices, so it has a fixed size and a relay can
// embed two per tunnel cheaply.
type Tracker struct {
	remaining  uint64 // payload bytes of the current frame still to come
	msgLen     uint64 // payload bytes of the open data message so far
	maxMessage uint64 // 0: no limit
	messages   uint64

	hdr    [maxHeader]byte // a header split across Feed calls
	hdrLen uint8           // bytes of hdr filled; 0 when not inside a header
	err    uint8           // index into errs; sticky once set

	ready       bool // set by New
	fromClient  bool // frames must be masked
	inMessage   bool // a data message has started and its FIN frame is not yet complete
	endsMessage bool // the current frame is the FIN frame of a data message
	closeSeen   bool

	// The status code of the first Close frame: its payload's first two
	// bytes, unmasked with closeKey, may come in separate Feed calls.
	closeCode    uint16  // 0 until known; noStatus when the payload was empty
	closeKey     [4]byte // the first Close frame's mask key (zero when unmasked)
	closeFirst   uint8   // the code's first byte, unmasked
	closeGot     uint8   // bytes of the code read so far
	readingClose bool    // the current frame is the first Close and its code is incomplete
}

// noStatus is RFC 6455's 1005: a Close frame that carried no status code.
const noStatus = 1005

// New returns a Tracker for one direction. fromClient: frames must be masked
// (client→server) or must not be (server→client). maxMessage: 0 means no
// limit (as does a negative value), else the largest total payload of one
// data message, summed over its frames including continuations.
func New(fromClient bool, maxMessage int64) Tracker {
	return Tracker{ready: true, fromClient: fromClient, maxMessage: uint64(max(maxMessage, 0))}
}

// Feed consumes the next bytes of the stream. It returns how many bytes of p
// were consumed: len(p) when err is nil.
//
// On a protocol violation or a message over the limit it stops at the start
// of the offending frame's header, so p[:n] can still be forwarded and the
// relay can act at a frame boundary. If that header began in an earlier call,
// its first bytes were consumed then and n is 0; AtFrameBoundary then reports
// false, telling the relay that injecting a frame is no longer safe.
// After an error the tracker stays in the error state: further Feed calls
// return 0 and the same error.
//
// Feed panics on a Tracker not made by New: a zero Tracker would silently
// accept unmasked client frames.
func (t *Tracker) Feed(p []byte) (n int, err error) {
	if !t.ready {
		panic("wsframe: Feed on a Tracker not made by New")
	}
	if t.err != errNone {
		return 0, errs[t.err]
	}
	for n < len(p) {
		if t.remaining > 0 {
			k := min(uint64(len(p)-n), t.remaining)
			if t.readingClose {
				t.readCloseCode(p[n : n+int(k)])
			}
			n += int(k)
			t.remaining -= k
			if t.remaining == 0 {
				t.readingClose = false // a one-byte payload leaves no code
				t.endFrame()
			}
			continue
		}
		start := n - int(t.hdrLen) // negative if the header began in an earlier call
		h := p[n:]
		if t.hdrLen == 0 && len(h) >= 2 && len(h) >= headerSize(h[1]) {
			h = h[:headerSize(h[1])] // fast path: the whole header is in p, no copy
			n += len(h)
		} else {
			if !t.collectHeader(p, &n) {
				return n, nil // the rest of the header comes with the next call
			}
			h = t.hdr[:t.hdrLen]
		}
		t.hdrLen = 0
		if e := t.startFrame(h); e != errNone {
			t.err = e
			t.hdrLen = uint8(max(-start, 0)) // bytes of this header consumed by earlier calls
			return max(start, 0), errs[e]
		}
		if t.remaining == 0 {
			t.endFrame()
		}
	}
	return n, nil
}

// collectHeader copies header bytes from p[*n:] into t.hdr and reports
// whether the header is now complete.
func (t *Tracker) collectHeader(p []byte, n *int) bool {
	for {
		need := 2
		if t.hdrLen >= 2 {
			need = headerSize(t.hdr[1])
		}
		if int(t.hdrLen) == need {
			return true
		}
		if *n == len(p) {
			return false
		}
		c := copy(t.hdr[t.hdrLen:need], p[*n:])
		t.hdrLen += uint8(c)
		*n += c
	}
}

// headerSize returns the length of a frame header given its second byte.
func headerSize(b1 byte) int {
	size := 2
	switch b1 &^ maskBit {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if b1&maskBit != 0 {
		size += 4
	}
	return size
}

// startFrame validates a complete header and enters its payload. All checks
// come before any state changes, so after an error the tracker still
// describes the stream up to the start of the offending frame.
func (t *Tracker) startFrame(h []byte) uint8 {
	b0, b1 := h[0], h[1]
	fin, op := b0&finBit != 0, b0&0x0f
	if (b1&maskBit != 0) != t.fromClient {
		return errMask
	}
	length := uint64(b1 &^ maskBit)
	switch length {
	case 126:
		length = uint64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		length = binary.BigEndian.Uint64(h[2:])
		if length>>63 != 0 {
			return errLength
		}
	}
	// RFC 6455 asks for the shortest length encoding, but enforcing that is
	// the endpoints' business; the tracker only needs the value.

	switch op {
	case opClose, opPing, opPong:
		if !fin {
			return errControlFragmented
		}
		if length > maxControlPayload {
			return errControlTooLong
		}
		if op == opClose && !t.closeSeen {
			t.closeSeen = true
			t.startCloseCode(h, length)
		}
		t.remaining = length
		return errNone
	case opContinuation:
		if !t.inMessage {
			return errContinuation
		}
	case opText, opBinary:
		if t.inMessage {
			return errContinuation
		}
	default:
		return errReservedOpcode
	}

	msgLen := t.msgLen
	if op != opContinuation {
		msgLen = 0
	}
	// msgLen <= maxMessage < 2^63 and length < 2^63, so the sum cannot overflow.
	if t.maxMessage > 0 && msgLen+length > t.maxMessage {
		return errMessageTooBig
	}
	if op != opContinuation {
		t.inMessage = true
	}
	t.msgLen = msgLen + length
	t.endsMessage = fin
	t.remaining = length
	return errNone
}

// startCloseCode prepares to read the status code of the first Close
// frame, whose complete header is h.
func (t *Tracker) startCloseCode(h []byte, length uint64) {
	if length == 0 {
		t.closeCode = noStatus
		return
	}
	if t.fromClient {
		copy(t.closeKey[:], h[len(h)-4:])
	}
	t.readingClose = true
}

// readCloseCode takes the status code's bytes from b, the next payload
// bytes of the first Close frame.
func (t *Tracker) readCloseCode(b []byte) {
	for _, c := range b {
		c ^= t.closeKey[t.closeGot] // the code is the payload's bytes 0 and 1
		if t.closeGot == 0 {
			t.closeFirst, t.closeGot = c, 1
			continue
		}
		t.closeCode = uint16(t.closeFirst)<<8 | uint16(c)
		t.closeGot, t.readingClose = 2, false
		return
	}
}

// endFrame records the end of the current frame's payload.
func (t *Tracker) endFrame() {
	if t.endsMessage {
		t.messages++
		t.inMessage, t.endsMessage = false, false
	}
}

// AtFrameBoundary reports whether everything fed so far ends exactly at the
// end of a frame (no partial header, no payload left): the only place a relay
// may inject a frame of its own (control frames are allowed between fragments
// of a message, RFC 6455 5.4).
func (t *Tracker) AtFrameBoundary() bool { return t.hdrLen == 0 && t.remaining == 0 }

// Messages returns the number of complete data messages seen: the FIN frame
// of a text/binary message, or of its last continuation, has ended.
func (t *Tracker) Messages() uint64 { return t.messages }

// CloseSeen reports whether a Close frame's header has been seen in this direction.
func (t *Tracker) CloseSeen() bool { return t.closeSeen }

// CloseCode returns the status code of the first Close frame seen in this
// direction, once its first two payload bytes have been fed: 1005 (no
// status) when that frame had no payload, 0 while no Close frame (or not
// its code yet) was seen, and 0 as well for a malformed one-byte payload.
// The code is read as sent, not checked against RFC 6455's valid ones.
func (t *Tracker) CloseCode() uint16 { return t.closeCode }

// AppendClose appends a Close frame with the status code and reason to dst.
// mask is for frames the gateway writes to an upstream, where it acts as a
// client and must mask (RFC 6455 5.3). It panics on a reason over 123 bytes
// or on 1005, 1006 or 1015, codes that must never be sent on the wire
// (RFC 6455 7.4.1): both are programming errors in the caller.
func AppendClose(dst []byte, code uint16, reason string, mask bool, maskKey [4]byte) []byte {
	if len(reason) > maxControlPayload-2 {
		panic("wsframe: close reason over 123 bytes")
	}
	if code == 1005 || code == 1006 || code == 1015 {
		panic("wsframe: close code reserved for local use")
	}
	dst = appendControlHeader(dst, opClose, 2+len(reason), mask, maskKey)
	start := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, code)
	dst = append(dst, reason...)
	maskInPlace(dst[start:], mask, maskKey)
	return dst
}

// appendControlHeader appends the header of a final control frame whose
// payload (at most 125 bytes, so a 7-bit length) follows.
func appendControlHeader(dst []byte, op byte, size int, mask bool, key [4]byte) []byte {
	b1 := byte(size)
	if mask {
		b1 |= maskBit
	}
	dst = append(dst, finBit|op, b1)
	if mask {
		dst = append(dst, key[:]...)
	}
	return dst
}

// maskInPlace applies the mask key to payload bytes the gateway itself wrote.
func maskInPlace(b []byte, mask bool, key [4]byte) {
	if !mask {
		return
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
}
