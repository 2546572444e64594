// Package testport hands tests 127.0.0.1 ports for servers they start as
// other processes (wsgate's config, node and Tornado apps), which cannot
// be given port 0.
//
// Ports come from below Linux's ephemeral range (32768-60999 by default).
// The kernel picks the local ports of outgoing connections and of
// listen(":0") from that range, so a port taken from it and released can
// go to a browser's connection or another test's listener before the
// intended server binds it; CI saw a node server fail with EADDRINUSE while
// the test talked to whatever had the port. No port is handed out twice
// by one process, and each is checked free when it is handed out.
package testport

import (
	"fmt"
	"net"
	"os"
	"sync"
)

const (
	low  = 20000
	high = 32000 // below the ephemeral range
)

var (
	mu   sync.Mutex
	next = low + os.Getpid()*7919%(high-low) // processes start apart
)

// Free returns a port on 127.0.0.1 that nothing listened on a moment ago.
func Free() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	for range high - low {
		port := next
		if next++; next == high {
			next = low
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d", low, high)
}
