package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/upstream"
)

// probeUserAgent lets upstream operators tell health checks from clients
// in their logs.
const probeUserAgent = "wsgate-health-check"

// maxProbeResponse bounds what a probe reads of an answer's head: a broken
// or hostile server must not make a health check buffer without end.
const maxProbeResponse = 16 << 10

// httpProbe returns a probe that sends GET path to the server over a fresh
// connection (TLS when ut is not nil) and judges the status line alone:
// expectStatus, or any 2xx/3xx when expectStatus is 0. A fresh connection
// per probe checks what a new client would meet (accept queue, TLS
// handshake and certificate, routing), not a warm keep-alive connection.
func httpProbe(path string, expectStatus int, ut *upstreamTLS) upstream.Probe {
	if path == "" {
		path = "/"
	}
	return func(ctx context.Context, address string) error {
		conn, err := probeDial(ctx, address, ut)
		if err != nil {
			return err
		}
		defer conn.Close()
		req := "GET " + path + " HTTP/1.1\r\n" +
			"Host: " + address + "\r\n" +
			"User-Agent: " + probeUserAgent + "\r\n" +
			"Connection: close\r\n\r\n"
		if _, err := io.WriteString(conn, req); err != nil {
			return probeErr(ctx, err)
		}
		status, err := readStatus(bufio.NewReader(io.LimitReader(conn, maxProbeResponse)))
		if err != nil {
			return probeErr(ctx, err)
		}
		switch {
		case expectStatus == 0 && (status < 200 || status > 399):
			return fmt.Errorf("status %d, want 2xx or 3xx", status)
		case expectStatus != 0 && status != expectStatus:
			return fmt.Errorf("status %d, want %d", status, expectStatus)
		}
		return nil
	}
}

// websocketProbe returns a probe that performs a real WebSocket handshake
// on path: the server must answer 101 with the Sec-WebSocket-Accept that
// matches a fresh random key, which a plain HTTP server, or one that
// answers the upgrade from a cache, cannot do. The probe then says goodbye
// with a Close frame (1000) so the server sees a clean end, not an error.
// It speaks TLS when ut is not nil.
func websocketProbe(path string, ut *upstreamTLS) upstream.Probe {
	if path == "" {
		path = "/"
	}
	return func(ctx context.Context, address string) error {
		var nonce [16]byte
		rand.Read(nonce[:])
		key := base64.StdEncoding.EncodeToString(nonce[:])
		conn, err := probeDial(ctx, address, ut)
		if err != nil {
			return err
		}
		defer conn.Close()
		req := "GET " + path + " HTTP/1.1\r\n" +
			"Host: " + address + "\r\n" +
			"User-Agent: " + probeUserAgent + "\r\n" +
			"Upgrade: websocket\r\n" +
			"Connection: Upgrade\r\n" +
			"Sec-WebSocket-Key: " + key + "\r\n" +
			"Sec-WebSocket-Version: 13\r\n\r\n"
		if _, err := io.WriteString(conn, req); err != nil {
			return probeErr(ctx, err)
		}
		br := bufio.NewReader(io.LimitReader(conn, maxProbeResponse))
		status, err := readStatus(br)
		if err != nil {
			return probeErr(ctx, err)
		}
		if status != 101 {
			return fmt.Errorf("status %d, want 101", status)
		}
		hdr, err := textproto.NewReader(br).ReadMIMEHeader()
		if err != nil {
			return probeErr(ctx, err)
		}
		if got, want := hdr.Get("Sec-WebSocket-Accept"), AcceptKey(key); got != want {
			return fmt.Errorf("Sec-WebSocket-Accept %q, want %q", got, want)
		}
		if _, err := conn.Write(closeFrame()); err != nil {
			return probeErr(ctx, err)
		}
		return nil
	}
}

// closeFrame is a masked client Close frame with status 1000 (normal).
func closeFrame() []byte {
	f := make([]byte, 8)
	f[0] = 0x88     // FIN, opcode Close
	f[1] = 0x80 | 2 // masked, 2 bytes of payload
	rand.Read(f[2:6])
	binary.BigEndian.PutUint16(f[6:], 1000)
	f[6] ^= f[2]
	f[7] ^= f[3]
	return f
}

// probeDial connects to address within ctx (TLS handshake included when ut
// is not nil) and puts ctx's deadline on the connection, so a server that
// accepts and then says nothing fails the probe at its timeout; a
// cancelled ctx unblocks it at once.
func probeDial(ctx context.Context, address string, ut *upstreamTLS) (net.Conn, error) {
	conn, err := dialServer(ctx, address, ut)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return &probeConn{Conn: conn, stop: stop}, nil
}

// probeConn ends the ctx watch with the connection.
type probeConn struct {
	net.Conn
	stop func() bool
}

func (c *probeConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// probeErr says the probe was cancelled when it was, rather than report
// the I/O error the cancellation caused. (A timeout reads as "i/o
// timeout" already.)
func probeErr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%w (%v)", ctxErr, err)
	}
	return err
}

// readStatus reads an HTTP/1.x status line and returns its code.
func readStatus(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("reading status line: %w", err)
	}
	proto, rest, _ := strings.Cut(strings.TrimRight(string(line), "\r\n"), " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/1.") || len(code) != 3 || err != nil {
		return 0, fmt.Errorf("malformed status line %q", line)
	}
	return status, nil
}
