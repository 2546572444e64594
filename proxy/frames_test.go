package proxy

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// frame encodes one WebSocket frame; masked frames are what clients send.
func frame(op byte, fin, masked bool, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	maskBit := byte(0)
	if masked {
		maskBit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, maskBit|byte(n))
	case n < 1<<16:
		out = append(out, maskBit|126, byte(n>>8), byte(n))
	default:
		out = append(out, maskBit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

type wsFrame struct {
	op      byte
	fin     bool
	payload []byte
}

// readFrame decodes one frame sent by a server (unmasked) or a client
// (masked).
func readFrame(r io.Reader) (wsFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return wsFrame{}, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return wsFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return wsFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return wsFrame{}, err
		}
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return wsFrame{}, err
	}
	if masked {
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return wsFrame{op: h[0] & 0x0f, fin: h[0]&0x80 != 0, payload: p}, nil
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

// handshakeRequest is a valid client handshake for path on host.
func handshakeRequest(host, path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

// rawClient opens a TCP conn to the gateway, sends the handshake plus
// extra bytes in one write, and reads the response head.
func rawClient(t testing.TB, addr string, extra []byte) (*net.TCPConn, *bufio.Reader, *http.Response) {
	t.Helper()
	c := dialRaw(t, addr, 10*time.Second).(*net.TCPConn)
	if _, err := c.Write(append([]byte(handshakeRequest(addr, "/raw")), extra...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading handshake response: %v", err)
	}
	return c, br, resp
}

// rawUpstream is a TCP server that reads one request head per connection
// and hands the conn to serve.
func rawUpstream(t testing.TB, serve func(c net.Conn, br *bufio.Reader, req *http.Request)) string {
	t.Helper()
	return rawUpstreamOn(listenLocal(t), serve)
}

// rawUpstreamOn is rawUpstream on a listener of the caller's (TLS).
func rawUpstreamOn(ln net.Listener, serve func(c net.Conn, br *bufio.Reader, req *http.Request)) string {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				serve(c, br, req)
			}()
		}
	}()
	return ln.Addr().String()
}

// switchingProtocols is a correct 101 head answering req.
func switchingProtocols(req *http.Request) string {
	return fmt.Sprintf("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		AcceptKey(req.Header.Get("Sec-WebSocket-Key")))
}

func mustContain(t testing.TB, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%q does not contain %q", s, sub)
	}
}
