package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"
)

// waitLimit bounds every wait for the demo servers: a backstop, not a
// measure of speed, since CI runs every package at once under -race.
const waitLimit = 10 * time.Second

func TestUpstreams(t *testing.T) {
	ups, err := Start(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, u := range ups {
			u.Close()
		}
	})

	for i, u := range ups {
		want := fmt.Sprintf("upstream-%d", i+1)
		if u.Name != want {
			t.Fatalf("upstream %d named %q, want %q", i, u.Name, want)
		}
		t.Run(u.Name, func(t *testing.T) {
			testHTTP(t, u)
			testWebSocket(t, u)
		})
	}

	for _, u := range ups {
		if err := u.Close(); err != nil {
			t.Fatalf("close %s: %v", u.Name, err)
		}
		if conn, err := net.DialTimeout("tcp", u.Addr, time.Second); err == nil {
			conn.Close()
			t.Fatalf("%s still accepts connections on %s after Close", u.Name, u.Addr)
		}
	}
}

func testHTTP(t *testing.T, u *Upstream) {
	for _, tc := range []struct {
		path     string
		status   int
		contains string
	}{
		{"/", 200, "Connect"},
		{"/healthz", 200, "ok"},
		{"/nope", 404, ""},
	} {
		status, body, err := fasthttp.GetTimeout(nil, "http://"+u.Addr+tc.path, waitLimit)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		if status != tc.status || !bytes.Contains(body, []byte(tc.contains)) {
			t.Errorf("GET %s = %d %.40q, want %d containing %q", tc.path, status, body, tc.status, tc.contains)
		}
	}
}

func testWebSocket(t *testing.T, u *Upstream) {
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+u.Addr+"/websocket?Id=abc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// read returns the next text message, skipping time pushes unless asked
	// for them, since they may interleave with any reply.
	read := func(wantType string) map[string]string {
		t.Helper()
		if err := conn.SetReadDeadline(time.Now().Add(waitLimit)); err != nil {
			t.Fatal(err)
		}
		for {
			messageType, data, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("waiting for %s: %v", wantType, err)
			}
			if messageType != websocket.TextMessage {
				t.Fatalf("waiting for %s: got binary %q", wantType, data)
			}
			var msg map[string]string
			if err := json.Unmarshal(data, &msg); err != nil {
				t.Fatalf("bad JSON %q: %v", data, err)
			}
			if msg["upstream"] != u.Name {
				t.Fatalf("message %q names the wrong upstream, want %s", data, u.Name)
			}
			if msg["type"] == wantType {
				return msg
			}
			if msg["type"] != "time" {
				t.Fatalf("waiting for %s: got %q", wantType, data)
			}
		}
	}

	if hello := read("hello"); hello["id"] != "abc" {
		t.Errorf("hello id = %q, want abc", hello["id"])
	}
	// The demo pushes once a second.
	tick := read("time")
	if _, err := time.Parse(time.RFC3339, tick["time"]); err != nil {
		t.Errorf("time push %q: %v", tick["time"], err)
	}

	if err := conn.WriteMessage(websocket.TextMessage, []byte("hi there")); err != nil {
		t.Fatal(err)
	}
	if echo := read("echo"); echo["data"] != "hi there" {
		t.Errorf("echo data = %q, want %q", echo["data"], "hi there")
	}

	payload := []byte{0, 1, 2, 0xff}
	if err := conn.WriteMessage(websocket.BinaryMessage, payload); err != nil {
		t.Fatal(err)
	}
	for {
		messageType, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if messageType == websocket.BinaryMessage {
			if !bytes.Equal(data, payload) {
				t.Errorf("binary echo = %v, want %v", data, payload)
			}
			break
		}
	}

}

func TestReadLimit(t *testing.T) {
	ups, err := Start(1)
	if err != nil {
		t.Fatal(err)
	}
	defer ups[0].Close()

	conn, _, err := websocket.DefaultDialer.Dial("ws://"+ups[0].Addr+"/websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("x", maxMessageSize+1))); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(waitLimit)); err != nil {
		t.Fatal(err)
	}
	for {
		_, _, err := conn.ReadMessage()
		if websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			return
		}
		if err != nil {
			t.Fatalf("got %v, want close 1009 (message too big)", err)
		}
	}
}

func TestCloseDisconnectsClients(t *testing.T) {
	ups, err := Start(1)
	if err != nil {
		t.Fatal(err)
	}
	u := ups[0]
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+u.Addr+"/websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, _, err := conn.ReadMessage(); err != nil { // hello: the client is registered
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() { done <- u.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Close did not return with a client connected")
	}

	if err := conn.SetReadDeadline(time.Now().Add(waitLimit)); err != nil {
		t.Fatal(err)
	}
	for {
		_, _, err := conn.ReadMessage()
		if websocket.IsCloseError(err, websocket.CloseGoingAway) {
			return
		}
		if err != nil {
			t.Fatalf("got %v, want close 1001 (going away)", err)
		}
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	ups, err := Start(2)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range ups {
		if _, _, err := fasthttp.GetTimeout(nil, "http://"+u.Addr+"/", waitLimit); err != nil {
			t.Fatal(err)
		}
		conn, _, err := websocket.DefaultDialer.Dial("ws://"+u.Addr+"/websocket", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, _, err := conn.ReadMessage(); err != nil { // hello: the client is registered
			t.Fatal(err)
		}
	}
	for _, u := range ups {
		if err := u.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// Some goroutines are still on their way out when Close returns, e.g.
	// fasthttp's worker-pool janitor, which wakes once per second.
	deadline := time.Now().Add(waitLimit)
	for {
		left := serverGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left after Close:\n%s", strings.Join(left, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serverGoroutines returns the stacks of goroutines running server code.
// fasthttp's process-wide clock and the test's own clients do not count.
func serverGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, fn := range []string{"demo.(*Upstream)", "demo.start", "fasthttp.(*Server)", "fasthttp.(*workerPool)", "fasthttp.hijackConnHandler"} {
			if strings.Contains(g, fn) {
				found = append(found, g)
				break
			}
		}
	}
	return found
}
