package e2e

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/internal/testpki"
)

// tornadoMsg is one message of apps/tornado/server.py as the page shows it.
type tornadoMsg struct {
	Type   string  `json:"type"`
	Server string  `json:"server"`
	ID     string  `json:"id"`
	Proto  *string `json:"proto"` // the hello's X-Forwarded-Proto
	Time   string  `json:"time"`
	T      float64 `json:"t"`
}

// startTornado returns the port of apps/tornado/server.py running under
// name, started once per test binary: the tests keep their clients apart
// by Id, and a server pushes to each of its clients on its own.
func startTornado(t *testing.T, name string) int {
	t.Helper()
	_, port := sharedPeer(t, "tornado "+name, systemPython, func(port int) []string {
		// -u: unbuffered, so the peer's log is complete when a test fails.
		return []string{"-u", "apps/tornado/server.py", "--port", fmt.Sprint(port), "--name", name}
	})
	return port
}

// TestTornadoPush: Chromium loads the Tornado page through wsgate, the page
// opens ws://<gateway>/websocket?Id=..., and the IOLoop's once-a-second
// pushes reach the page's DOM.
func TestTornadoPush(t *testing.T) {
	// Parallel: most of the test is waiting on timers and pushes, and 2 at
	// a time (GOMAXPROCS on CI) keeps the package well inside its budget.
	t.Parallel()
	requirePeers(t)
	up := startTornado(t, "tornado-1")
	gw := freePort(t)
	startWsgate(t, gw, fmt.Sprintf(`
listeners:
  - address: 127.0.0.1:%d
routes:
  - upstream: tornado
upstreams:
  tornado:
    servers:
      - address: 127.0.0.1:%d
`, gw, up))
	checkTornadoPush(t, browserOpts{}, fmt.Sprintf("http://127.0.0.1:%d", gw), "e2e-push", nil)
}

// TestTornadoPushWSS is TestTornadoPush over TLS: the gateway's listener
// has a certificate for 127.0.0.1 (an IP SAN) from a CA made here,
// Chromium is told to trust that certificate's key and no other, the page
// comes over https:// and so opens wss://<gateway>/websocket?Id=..., and
// the Tornado server, still plain HTTP behind the gateway, is told
// X-Forwarded-Proto: https.
func TestTornadoPushWSS(t *testing.T) {
	t.Parallel()
	requirePeers(t)
	up := startTornado(t, "tornado-1")
	ca := newTestCA(t)
	cert := ca.issue(t, "127.0.0.1")
	gw := freePort(t)
	startWsgate(t, gw, fmt.Sprintf(`
listeners:
%sroutes:
  - upstream: tornado
upstreams:
  tornado:
    servers:
      - address: 127.0.0.1:%d
`, tlsListenerYAML(fmt.Sprintf("127.0.0.1:%d", gw), cert), up))
	// The certificate Chromium will accept by its key is also the right one
	// for the address: served to a client that sends no SNI (an IP) and
	// valid for 127.0.0.1 under the CA.
	ca.checkServed(t, gw, "127.0.0.1", cert)

	sec := checkTornadoPush(t, browserOpts{TrustSPKI: []string{cert.SPKIHash()}}, fmt.Sprintf("https://127.0.0.1:%d", gw), "e2e-push-wss", &cert)
	if !strings.HasPrefix(sec.Protocol, "TLS 1.") {
		t.Errorf("page TLS protocol %q, want TLS 1.x", sec.Protocol)
	}
}

// browserTLS is what a scenario reports of a page response's TLS
// (Playwright's securityDetails).
type browserTLS struct {
	Protocol    string `json:"protocol"`
	SubjectName string `json:"subjectName"`
	Issuer      string `json:"issuer"`
}

// checkTornadoPush runs scenarios/tornado_push.js on base/?Id=id (base is
// http://HOST:PORT or https://HOST:PORT, the gateway) and checks that the
// page's origin is base, that it opened exactly its WebSocket at the
// matching ws:// or wss:// URL, and that the hello (with the
// X-Forwarded-Proto the server saw) and at least three pushes a second
// apart reached the DOM. cert is the certificate the page must have been
// served over https://, nil over http://. It returns the page's TLS
// details (zero over http://).
func checkTornadoPush(t *testing.T, o browserOpts, base, id string, cert *testpki.Cert) browserTLS {
	t.Helper()
	secure := strings.HasPrefix(base, "https://")
	wsScheme, wantProto := "ws", "http"
	if secure {
		wsScheme, wantProto = "wss", "https"
	}
	// The hello and then three pushes.
	out := runBrowserOpts(t, o, "scenarios/tornado_push.js", base+"/?Id="+id, "4")
	var got struct {
		Texts    []string    `json:"texts"`
		Origin   string      `json:"origin"`
		Protocol string      `json:"protocol"`
		WSURLs   []string    `json:"wsURLs"`
		TLS      *browserTLS `json:"tls"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("browser result %q: %v", out, err)
	}
	if got.Origin != base || got.Protocol != wantProto+":" {
		t.Errorf("page origin %q (protocol %q), want %q", got.Origin, got.Protocol, base)
	}
	wantWS := wsScheme + strings.TrimPrefix(base, wantProto) + "/websocket?Id=" + id
	if len(got.WSURLs) != 1 || got.WSURLs[0] != wantWS {
		t.Errorf("the page opened WebSockets %q, want exactly %q", got.WSURLs, wantWS)
	}
	var tlsInfo browserTLS
	switch {
	case secure && got.TLS == nil:
		t.Errorf("page %s has no TLS details", base)
	case secure:
		tlsInfo = *got.TLS
		if tlsInfo.SubjectName != cert.Leaf.Subject.CommonName || tlsInfo.Issuer != "wsgate e2e test CA" {
			t.Errorf("page TLS %+v, want subject %q issued by the test CA", tlsInfo, cert.Leaf.Subject.CommonName)
		}
	case got.TLS != nil:
		t.Errorf("page %s has TLS details %+v", base, *got.TLS)
	}

	var pushes []tornadoMsg
	for i, s := range got.Texts {
		var m tornadoMsg
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("message %d %q is not the server's JSON: %v", i, s, err)
		}
		if m.Server != "tornado-1" || m.ID != id {
			t.Errorf("message %d %q: want server tornado-1 and id %s", i, s, id)
		}
		if i == 0 {
			if m.Type != "hello" {
				t.Errorf("first message %q: want the hello", s)
			} else if m.Proto == nil || *m.Proto != wantProto {
				t.Errorf("hello %q: the server saw X-Forwarded-Proto %v, want %s", s, m.Proto, wantProto)
			}
		}
		if m.Type == "time" {
			pushes = append(pushes, m)
		}
	}
	if len(pushes) < 3 {
		t.Fatalf("got %d pushed times in the page, want at least 3: %q", len(pushes), got.Texts)
	}
	// Each push is a new one, about a second after the one before: the
	// gateway neither repeats nor batches them.
	for i := 1; i < len(pushes); i++ {
		if d := pushes[i].T - pushes[i-1].T; d < 0.5 || d > 2.5 {
			t.Errorf("push %d came %.2fs after push %d, want about 1s", i, d, i-1)
		}
	}
	t.Logf("page %s (TLS %+v) opened %q; %d messages through wsgate (hello with X-Forwarded-Proto %s), %d pushed times: %s ... %s",
		got.Origin, tlsInfo, got.WSURLs, len(got.Texts), wantProto, len(pushes), pushes[0].Time, pushes[len(pushes)-1].Time)
	return tlsInfo
}

// TestTornadoHashByID: two Tornado servers behind `balance: hash` with
// `hash_key: query:Id`. A Tornado server keeps its registrations in memory,
// so a client must come back to the server that knows its Id: every page
// load (page and WebSocket) with one Id reaches one server, across
// reconnects, while different Ids spread over both servers.
func TestTornadoHashByID(t *testing.T) {
	// Parallel: most of the test is waiting on timers and pushes, and 2 at
	// a time (GOMAXPROCS on CI) keeps the package well inside its budget.
	t.Parallel()
	requirePeers(t)
	up1 := startTornado(t, "tornado-1")
	up2 := startTornado(t, "tornado-2")
	gw := freePort(t)
	startWsgate(t, gw, fmt.Sprintf(`
listeners:
  - address: 127.0.0.1:%d
routes:
  - upstream: tornado
upstreams:
  tornado:
    balance: hash
    hash_key: query:Id
    servers:
      - address: 127.0.0.1:%d
      - address: 127.0.0.1:%d
`, gw, up1, up2))

	// 16 Ids: if the hash put them all on one server by chance, that would
	// happen once in 2^15 runs.
	var ids []string
	for i := 0; i < 16; i++ {
		ids = append(ids, fmt.Sprintf("user-%02d", i))
	}
	const rounds = 3
	out := runBrowser(t, "scenarios/tornado_hash.js", fmt.Sprintf("http://127.0.0.1:%d/", gw), strings.Join(ids, ","), fmt.Sprint(rounds))
	var got map[string][][2]string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("browser result %q: %v", out, err)
	}
	perServer := map[string][]string{}
	for _, id := range ids {
		loads := got[id]
		if len(loads) != rounds {
			t.Errorf("Id %s: %d loads, want %d", id, len(loads), rounds)
			continue
		}
		server := loads[0][0]
		for r, l := range loads {
			if l[0] != server || l[1] != server {
				t.Errorf("Id %s load %d reached %s (hello) and %s (push), earlier loads %s: the Id moved", id, r, l[0], l[1], server)
			}
		}
		perServer[server] = append(perServer[server], id)
	}
	var servers []string
	for s := range perServer {
		servers = append(servers, s)
	}
	sort.Strings(servers)
	if strings.Join(servers, ",") != "tornado-1,tornado-2" {
		t.Errorf("the Ids reached servers %v, want both tornado-1 and tornado-2: %v", servers, perServer)
	}
	t.Logf("%d Ids x %d loads, each Id on one server: tornado-1 %d Ids, tornado-2 %d Ids", len(ids), rounds, len(perServer["tornado-1"]), len(perServer["tornado-2"]))
}
