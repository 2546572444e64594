package acmecert

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"time"

	"golang.org/x/crypto/acme/autocert"
)

// autocert logs nothing and keeps the reasons of its failures to itself
// (a failed challenge only shows as "no viable challenge type found"; a
// failed renewal is retried silently). The two wrappers below watch what
// goes through its cache and its HTTP client instead:
//   - loggingCache sees a certificate loaded from storage_dir and each new
//     certificate stored there (obtained, or renewed when one was held);
//   - loggingTransport sees each new order, the CA's problem documents,
//     failed challenges with the CA's reason, and network errors.

// loggingCache is autocert's DirCache with a line in the error log for
// every certificate loaded or stored.
type loggingCache struct {
	autocert.DirCache
	log *eventLog
}

func (c *loggingCache) Get(ctx context.Context, key string) ([]byte, error) {
	data, err := c.DirCache.Get(ctx, key)
	if err != nil {
		if err != autocert.ErrCacheMiss && ctx.Err() == nil {
			c.log.printf("acme: reading %q from %s: %v", key, c.log.storage, err)
		}
		return data, err
	}
	name, ok := certName(key)
	if !ok || !c.log.heldSerial(name).IsZero() {
		return data, nil
	}
	leaf := leafOf(data)
	switch {
	case leaf == nil:
	case time.Now().After(leaf.NotAfter):
		c.log.printf("acme %s: the stored certificate expired on %s; a new one will be ordered", name, stamp(leaf.NotAfter))
	default:
		c.log.held(name, leaf)
		c.log.printf("acme %s: using the stored certificate (serial %x, valid until %s)", name, leaf.SerialNumber, stamp(leaf.NotAfter))
	}
	return data, nil
}

func (c *loggingCache) Put(ctx context.Context, key string, data []byte) error {
	err := c.DirCache.Put(ctx, key, data)
	name, ok := certName(key)
	if !ok {
		if err != nil {
			c.log.printf("acme: storing %q in %s: %v", key, c.log.storage, err)
		}
		return err
	}
	leaf := leafOf(data)
	if leaf == nil {
		return err
	}
	prev := c.log.held(name, leaf)
	switch {
	case prev.serial == leaf.SerialNumber.String():
		// the same certificate again: autocert stores it once more for
		// each handshake that waited on the issuance
	case prev.serial == "":
		c.log.printf("acme %s: certificate obtained from %s (issuer %q, serial %x, valid until %s)",
			name, c.log.dirURL, leaf.Issuer.CommonName, leaf.SerialNumber, stamp(leaf.NotAfter))
	default:
		c.log.printf("acme %s: certificate renewed (serial %x, valid until %s; the previous one was valid until %s)",
			name, leaf.SerialNumber, stamp(leaf.NotAfter), stamp(prev.notAfter))
	}
	if err != nil {
		c.log.printf("acme %s: cannot store the certificate in %s: %v (it is served, but a restart will order a new one)",
			name, c.log.storage, err)
	}
	return err
}

// certName tells whether a cache key names a certificate, and for which
// name. autocert's keys: "NAME" (ECDSA), "NAME+rsa" (for clients without
// ECDSA), "NAME+token" (TLS-ALPN-01), "TOKEN+http-01", "acme_account+key".
func certName(key string) (string, bool) {
	if name, ok := strings.CutSuffix(key, "+rsa"); ok {
		return name + " (RSA)", true
	}
	if strings.Contains(key, "+") || strings.HasSuffix(key, ".key") {
		return "", false
	}
	return key, true
}

// leafOf returns the first certificate of autocert's stored PEM (key, then
// chain), or nil.
func leafOf(data []byte) *x509.Certificate {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil
		}
		if b.Type == "CERTIFICATE" {
			leaf, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil
			}
			return leaf
		}
	}
}

// loggingTransport is the ACME client's HTTP transport, logging new
// orders, the CA's problem documents, failed challenges and network
// errors. After Close it refuses every request.
type loggingTransport struct {
	next http.RoundTripper
	log  *eventLog
}

// maxLoggedBody bounds what is read of a CA's answer to log it.
const maxLoggedBody = 1 << 20

func (t *loggingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.log.closed.Load() {
		return nil, errClosed
	}
	if req.Method == http.MethodPost && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		for _, name := range orderedNames(body) {
			if prev := t.log.heldSerial(name); prev.IsZero() {
				t.log.printf("acme %s: ordering a certificate from %s", name, t.log.dirURL)
			} else {
				t.log.printf("acme %s: renewing the certificate valid until %s at %s", name, stamp(prev.notAfter), t.log.dirURL)
			}
		}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		if req.Context().Err() == nil {
			t.log.printf("acme: %s %s: %v", req.Method, req.URL, err)
		}
		return resp, err
	}
	if !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxLoggedBody))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
	if err != nil {
		return resp, nil // the ACME client meets the error itself
	}
	if resp.StatusCode >= 400 {
		t.logProblem(req, resp.StatusCode, body)
	} else {
		t.logInvalidAuthz(req.URL.String(), body)
	}
	return resp, nil
}

// problem is an RFC 7807 problem document as ACME CAs send them.
type problem struct {
	Type        string    `json:"type"`
	Detail      string    `json:"detail"`
	Subproblems []problem `json:"subproblems"`
	Identifier  *struct {
		Value string `json:"value"`
	} `json:"identifier"`
}

func (p *problem) String() string {
	s := strings.TrimPrefix(p.Type, "urn:ietf:params:acme:error:")
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	for _, sp := range p.Subproblems {
		s += "; " + sp.String()
		if sp.Identifier != nil {
			s += " (" + sp.Identifier.Value + ")"
		}
	}
	return s
}

func (t *loggingTransport) logProblem(req *http.Request, status int, body []byte) {
	var p problem
	if json.Unmarshal(body, &p) != nil || p.Type == "" {
		t.log.printf("acme: %s %s: status %d", req.Method, req.URL, status)
		return
	}
	if strings.HasSuffix(p.Type, ":badNonce") {
		return // the ACME client retries with a fresh nonce
	}
	t.log.printf("acme: %s %s: status %d: %s", req.Method, req.URL, status, p.String())
}

// logInvalidAuthz logs the CA's reason when an authorization came back
// invalid: the challenge failed (once per authorization).
func (t *loggingTransport) logInvalidAuthz(url string, body []byte) {
	var z struct {
		Status     string `json:"status"`
		Identifier struct {
			Value string `json:"value"`
		} `json:"identifier"`
		Challenges []struct {
			Type  string   `json:"type"`
			Error *problem `json:"error"`
		} `json:"challenges"`
	}
	if json.Unmarshal(body, &z) != nil || z.Status != "invalid" || len(z.Challenges) == 0 {
		return
	}
	if !t.log.firstTime(url) {
		return
	}
	for _, c := range z.Challenges {
		if c.Error != nil {
			t.log.printf("acme %s: the CA could not validate the %s challenge: %s", z.Identifier.Value, c.Type, c.Error.String())
		}
	}
}

// orderedNames returns the identifiers of a newOrder request (a JWS whose
// payload lists "identifiers"), or nil for any other request.
func orderedNames(jws []byte) []string {
	var msg struct {
		Payload string `json:"payload"`
	}
	if json.Unmarshal(jws, &msg) != nil || msg.Payload == "" {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(msg.Payload)
	if err != nil {
		return nil
	}
	var order struct {
		Identifiers []struct {
			Value string `json:"value"`
		} `json:"identifiers"`
	}
	if json.Unmarshal(payload, &order) != nil {
		return nil
	}
	names := make([]string, 0, len(order.Identifiers))
	for _, id := range order.Identifiers {
		names = append(names, id.Value)
	}
	return names
}

// heldCert is what the log knows of the certificate held for a name.
type heldCert struct {
	serial   string
	notAfter time.Time
}

func (h heldCert) IsZero() bool { return h.serial == "" }

// held records leaf as the certificate held for name and returns the one
// it replaces.
func (l *eventLog) held(name string, leaf *x509.Certificate) heldCert {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev := l.certs[name]
	l.certs[name] = heldCert{serial: leaf.SerialNumber.String(), notAfter: leaf.NotAfter}
	delete(l.failed, name)
	return prev
}

func (l *eventLog) heldSerial(name string) heldCert {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.certs[name]
}

// firstTime reports whether key is seen for the first time (bounded: the
// set is forgotten when it grows large).
func (l *eventLog) firstTime(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, seen := l.seen[key]; seen {
		return false
	}
	if len(l.seen) >= 1024 {
		clear(l.seen)
	}
	l.seen[key] = struct{}{}
	return true
}
