// Package testdns is a real DNS server on 127.0.0.1 for tests, answering
// from records the test changes as it goes (DNS discovery of upstreams).
package testdns

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Zone is a DNS server and its records.
type Zone struct {
	t *testing.T
	// Addr is the server's address (host:port), for a resolver setting.
	Addr string
	// Queries counts the questions answered.
	Queries  atomic.Int64
	mu       sync.Mutex
	records  map[string][]dns.RR // by lower-case FQDN
	servfail bool
}

// Start runs a zone until the test ends.
func Start(t *testing.T) *Zone {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &Zone{t: t, Addr: pc.LocalAddr().String(), records: map[string][]dns.RR{}}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: z, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("DNS server did not start")
	}
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

// ServeDNS answers from the records: NXDOMAIN for an unknown name, an
// empty answer for a known name without records of the asked type.
func (z *Zone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	z.Queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(r)
	// Go's resolver takes an empty answer that is neither authoritative
	// nor recursive for a lame referral.
	m.Authoritative = true
	z.mu.Lock()
	switch {
	case z.servfail:
		m.Rcode = dns.RcodeServerFailure
	case len(r.Question) == 1:
		q := r.Question[0]
		rrs, ok := z.records[strings.ToLower(q.Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	z.mu.Unlock()
	w.WriteMsg(m)
}

// Set replaces name's records with rrs, in zone file syntax without the
// owner ("A 127.0.0.1", "SRV 10 5 9001 a.test."); none deletes the name.
func (z *Zone) Set(name string, rrs ...string) {
	fqdn := dns.Fqdn(strings.ToLower(name))
	var parsed []dns.RR
	for _, s := range rrs {
		rr, err := dns.NewRR(fqdn + " 1 IN " + s)
		if err != nil {
			z.t.Fatal(err)
		}
		parsed = append(parsed, rr)
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(parsed) == 0 {
		delete(z.records, fqdn)
		return
	}
	z.records[fqdn] = parsed
}

// SetServfail makes every answer SERVFAIL (on) or normal again.
func (z *Zone) SetServfail(on bool) {
	z.mu.Lock()
	z.servfail = on
	z.mu.Unlock()
}
