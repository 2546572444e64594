package proxy

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/fasthttp/websocket"
)

func TestAcceptKey(t *testing.T) {
	for key, want := range map[string]string{
		"dGhlIHNhbXBsZSBub25jZQ==": "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", // RFC 6455 section 1.3
		"sN9cRrP/n9NdMgdcy2VJFQ==": "fFBooB7FAkLlXgRSz0BT3v4hq5s=", // the seed's example
	} {
		if got := AcceptKey(key); got != want {
			t.Errorf("AcceptKey(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestEchoSizes(t *testing.T) {
	gw := gatewayFor(t, echoUpstream(t, websocket.Upgrader{}))
	c := dial(t, gw, "/echo", nil)
	c.SetReadLimit(64 << 20)
	for _, size := range []int{0, 125, 126, 65535, 65536, 16 << 20} {
		for _, mt := range []int{websocket.TextMessage, websocket.BinaryMessage} {
			msg := make([]byte, size)
			for i := range msg {
				msg[i] = 'a' + byte(rand.IntN(26))
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				t.Fatalf("write %d bytes: %v", size, err)
			}
			gotType, got, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("read %d bytes: %v", size, err)
			}
			if gotType != mt || !bytes.Equal(got, msg) {
				t.Fatalf("size %d type %d: got type %d, %d bytes, equal=%v", size, mt, gotType, len(got), bytes.Equal(got, msg))
			}
		}
	}
}
