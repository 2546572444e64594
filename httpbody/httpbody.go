// Package httpbody reads HTTP/1.1 message bodies by their framing
// (RFC 9112 sections 6 and 7): a fixed Content-Length or the chunked
// coding. Each reader tells a body that ended as
// its framing says from one cut short, so a proxy never passes on a
// truncated body as a complete one, and each says whether the connection
// is left exactly at the end of the message (the only state in which it
// may carry another one).
package httpbody

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// ErrTruncated is a body whose connection ended before its framing said
// it was complete: fewer bytes than Content-Length, or no last chunk.
// It wraps io.ErrUnexpectedEOF.
var ErrTruncated = fmt.Errorf("body cut short: %w", io.ErrUnexpectedEOF)

// ErrMalformed is a chunked body that does not follow the chunked coding.
var ErrMalformed = errors.New("malformed chunked body")

// Limits of the chunked coding's lines. A chunk-size line carries at most
// 16 hex digits plus extensions; trailer fields are headers, bounded like
// a head.
const (
	maxLineBytes    = 4096
	maxTrailerBytes = 16 << 10
	maxSizeDigits   = 15 // 15 hex digits stay below 2^60: no overflow
)

// Fixed reads a body of exactly n bytes.
type Fixed struct {
	r    io.Reader
	left int64
	err  error
}

// NewFixed returns a reader of the n-byte body that starts at r.
func NewFixed(r io.Reader, n int64) *Fixed { return &Fixed{r: r, left: n} }

// Reset makes f a reader of the n-byte body that starts at r, so that a
// Fixed can be kept in a pooled object.
func (f *Fixed) Reset(r io.Reader, n int64) { *f = Fixed{r: r, left: n} }

// Read reads body bytes; it returns io.EOF once all n were read, and
// ErrTruncated if r ends before.
func (f *Fixed) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if f.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= int64(n)
	switch {
	case f.left == 0:
		return n, io.EOF
	case err == io.EOF:
		f.err = ErrTruncated
	case err != nil:
		f.err = err
	}
	return n, f.err
}

// Complete reports whether the whole body was read.
func (f *Fixed) Complete() bool { return f.left == 0 }

// chunked states.
const (
	stateSize    = iota // at a chunk-size line
	stateData           // inside a chunk's data
	stateDataEnd        // at the CRLF after a chunk's data
	stateDone           // the last chunk and the trailer section are read
)

// Chunked decodes a body in the chunked coding. Trailer fields are kept
// for Trailers.
type Chunked struct {
	r        *bufio.Reader
	state    int
	left     int64 // data bytes left in the current chunk
	err      error
	trailers []byte
}

// NewChunked returns a reader of the chunked body that starts at r.
func NewChunked(r *bufio.Reader) *Chunked { return &Chunked{r: r} }

// Reset makes c a reader of the chunked body that starts at r, so that a
// Chunked can be kept in a pooled object.
func (c *Chunked) Reset(r *bufio.Reader) { *c = Chunked{r: r, trailers: c.trailers[:0]} }

// Trailers returns the trailer fields read after the last chunk, each
// line as received followed by CRLF; nil before the body is complete.
// They are valid until Reset.
func (c *Chunked) Trailers() []byte {
	if !c.Complete() {
		return nil
	}
	return c.trailers
}

// Read reads decoded body bytes. It returns io.EOF after the last chunk
// and its trailer section, ErrTruncated if r ends before them, and
// ErrMalformed for bytes that break the coding.
func (c *Chunked) Read(p []byte) (int, error) {
	for c.err == nil {
		switch c.state {
		case stateSize:
			c.readSize()
		case stateData:
			if len(p) == 0 {
				return 0, nil
			}
			if int64(len(p)) > c.left {
				p = p[:c.left]
			}
			n, err := c.r.Read(p)
			c.left -= int64(n)
			if c.left == 0 {
				c.state = stateDataEnd
			}
			if err != nil && c.left > 0 {
				c.fail(err)
			}
			if n > 0 {
				return n, nil
			}
		case stateDataEnd:
			c.readCRLF()
			c.state = stateSize
		case stateDone:
			return 0, io.EOF
		}
	}
	return 0, c.err
}

// Complete reports whether the last chunk and the trailer section were
// read: the connection is then at the end of the message.
func (c *Chunked) Complete() bool { return c.state == stateDone && c.err == nil }

// fail records the error that ends the body: the source's end becomes
// ErrTruncated.
func (c *Chunked) fail(err error) {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = ErrTruncated
	}
	c.err = err
}

// readSize reads a chunk-size line: hex digits, optional extensions, CRLF.
func (c *Chunked) readSize() {
	line, ok := c.line()
	if !ok {
		return
	}
	var size int64
	i := 0
	for ; i < len(line); i++ {
		d := unhex(line[i])
		if d < 0 {
			break
		}
		if i == maxSizeDigits {
			c.err = fmt.Errorf("%w: chunk size has more than %d digits", ErrMalformed, maxSizeDigits)
			return
		}
		size = size<<4 | int64(d)
	}
	if i == 0 {
		c.err = fmt.Errorf("%w: chunk-size line %q", ErrMalformed, clip(line))
		return
	}
	// Only whitespace then extensions may follow the size (RFC 9112
	// 7.1.1: BWS before ';').
	rest := line[i:]
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	if len(rest) > 0 && rest[0] != ';' {
		c.err = fmt.Errorf("%w: chunk-size line %q", ErrMalformed, clip(line))
		return
	}
	if size == 0 {
		c.readTrailers()
		return
	}
	c.left, c.state = size, stateData
}

// readTrailers reads the trailer section after the last chunk, up to and
// including its empty line.
func (c *Chunked) readTrailers() {
	total := 0
	for {
		line, ok := c.line()
		if !ok {
			return
		}
		if len(line) == 0 {
			c.state = stateDone
			return
		}
		if total += len(line); total > maxTrailerBytes {
			c.err = fmt.Errorf("%w: trailer section over %d bytes", ErrMalformed, maxTrailerBytes)
			return
		}
		c.trailers = append(append(c.trailers, line...), "\r\n"...)
	}
}

// readCRLF reads the CRLF that ends a chunk's data.
func (c *Chunked) readCRLF() {
	b, err := c.r.Peek(2)
	if len(b) == 2 && b[0] == '\r' && b[1] == '\n' {
		c.r.Discard(2)
		return
	}
	if err != nil && len(b) < 2 && (len(b) == 0 || b[0] == '\r') {
		c.fail(err)
		return
	}
	c.err = fmt.Errorf("%w: chunk data not followed by CRLF", ErrMalformed)
}

// line reads one CRLF-terminated line and returns it without the CRLF. A
// bare LF is malformed: a peer reading it as a line end and one that does
// not would see different messages (request smuggling).
func (c *Chunked) line() ([]byte, bool) {
	b, err := c.r.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			c.err = fmt.Errorf("%w: line over %d bytes", ErrMalformed, c.r.Size())
		} else {
			c.fail(err)
		}
		return nil, false
	}
	if len(b) > maxLineBytes {
		c.err = fmt.Errorf("%w: line over %d bytes", ErrMalformed, maxLineBytes)
		return nil, false
	}
	if len(b) < 2 || b[len(b)-2] != '\r' {
		c.err = fmt.Errorf("%w: line ends in a bare LF", ErrMalformed)
		return nil, false
	}
	return b[:len(b)-2], true
}

func unhex(b byte) int {
	switch {
	case '0' <= b && b <= '9':
		return int(b - '0')
	case 'a' <= b && b <= 'f':
		return int(b-'a') + 10
	case 'A' <= b && b <= 'F':
		return int(b-'A') + 10
	}
	return -1
}

// clip shortens a line quoted in an error.
func clip(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}
