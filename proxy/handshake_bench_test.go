package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkHandshake measures one WebSocket handshake and its teardown per
// iteration: a raw client connects, sends a handshake, reads the 101,
// sends one tiny masked frame, reads its echo and closes; the iteration
// ends when the upstream saw the close. The upstream is a minimal raw
// server, so allocations and CPU are the gateway's plus a small constant:
// the "direct" sub-benchmark runs the same client against the upstream
// alone, and the gateway's share is the difference.
func BenchmarkHandshake(b *testing.B) {
	up, closed := rawEchoUpstream(b)
	b.Run("direct", func(b *testing.B) { benchHandshakes(b, up, closed) })
	b.Run("gateway", func(b *testing.B) {
		benchHandshakes(b, gatewayFor(b, up), closed)
	})
}

// benchHandshakeRequest is the client's handshake; the key is fixed, the
// upstream answers whatever key it gets.
const benchHandshakeRequest = "GET /bench HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// benchFrame is a masked text frame "hi" (mask 01 02 03 04); its echo
// from the upstream is benchEcho.
var (
	benchFrame = []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}
	benchEcho  = []byte{0x81, 0x02, 'h', 'i'}
)

func benchHandshakes(b *testing.B, addr string, closed <-chan struct{}) {
	req := []byte(benchHandshakeRequest)
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		// The 101 head, and nothing after it: the upstream sends no
		// frame before the client's.
		n := 0
		for !bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")) {
			m, err := c.Read(buf[n:])
			if err != nil || n+m == len(buf) {
				b.Fatalf("reading the 101 after %q: %v", buf[:n], err)
			}
			n += m
		}
		if !bytes.HasPrefix(buf, []byte("HTTP/1.1 101 ")) {
			b.Fatalf("answer %q", buf[:n])
		}
		if _, err := c.Write(benchFrame); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:len(benchEcho)]); err != nil || !bytes.Equal(buf[:len(benchEcho)], benchEcho) {
			b.Fatalf("echo %q, %v", buf[:len(benchEcho)], err)
		}
		c.Close()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			b.Fatal("the upstream did not see the close")
		}
	}
}

// rawEchoUpstream is a WebSocket server written by hand, as cheap as it
// gets: it answers a handshake with a 101, echoes one 2-byte masked frame
// unmasked, then reads until the peer closes and sends on closed.
func rawEchoUpstream(b *testing.B) (string, <-chan struct{}) {
	ln := listenLocal(b)
	closed := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { closed <- struct{}{} }()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				key := ""
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if k, ok := bytes.CutPrefix(line, []byte("Sec-WebSocket-Key: ")); ok {
						key = string(bytes.TrimSpace(k))
					}
					if len(line) == 2 {
						break
					}
				}
				if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
					"Sec-WebSocket-Accept: "+AcceptKey(key)+"\r\n\r\n"); err != nil {
					return
				}
				var frame [8]byte
				if _, err := io.ReadFull(br, frame[:]); err != nil {
					return
				}
				c.Write([]byte{frame[0], frame[1] &^ 0x80, frame[6] ^ frame[2], frame[7] ^ frame[3]})
				io.Copy(io.Discard, br)
			}()
		}
	}()
	return ln.Addr().String(), closed
}
