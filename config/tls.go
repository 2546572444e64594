package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Defaults of the TLS keys.
const (
	defaultMinVersion = "1.2"
	// DefaultClientCertHeader carries a verified client certificate's subject.
	DefaultClientCertHeader = "X-Client-Cert-Subject"
	// DefaultACMEDirectory is Let's Encrypt's production directory.
	DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"
	// DefaultACMEStorage is where ACME keeps its account and certificates
	// when storage_dir is not written.
	DefaultACMEStorage = "acme"
	// expiryWarning: a certificate that expires sooner than this is
	// accepted with a warning.
	expiryWarning = 14 * 24 * time.Hour
)

// TLSVersions maps min_version values to crypto/tls versions.
var TLSVersions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

func (t *TLS) applyDefaults() {
	if t.MinVersion == "" {
		t.MinVersion = defaultMinVersion
	}
	if t.ClientCAFile != "" && t.ClientAuth == "" {
		t.ClientAuth = ClientAuthRequire
	}
	if t.ClientCertHeader == "" {
		t.ClientCertHeader = DefaultClientCertHeader
	}
	if a := t.ACME; a != nil {
		if a.DirectoryURL == "" {
			a.DirectoryURL = DefaultACMEDirectory
		}
		if a.StorageDir == "" {
			a.StorageDir = DefaultACMEStorage
		}
	}
}

// tls checks a listener's TLS block. The proxy loads the certificates at
// startup; checking here that the files can be read and belong together
// lets -check catch a wrong path or an expired certificate before a
// deploy does.
func (v *validator) tls(p keyPath, t *TLS) {
	if t == nil {
		if v.written(p) { // "tls:" with nothing under it decodes to nil
			v.add(p, "is empty; list at least one certificate, or remove the key for plain TCP")
		}
		return
	}
	if len(t.Certificates) == 0 && t.ACME == nil {
		v.add(p.key("certificates"), "at least one certificate is needed (or acme)")
	}
	for i, c := range t.Certificates {
		v.certificatePair(p.key("certificates").index(i), c.CertFile, c.KeyFile)
	}
	if _, ok := TLSVersions[t.MinVersion]; !ok && t.MinVersion != "" {
		v.add(p.key("min_version"), "%q is not a TLS version wsgate accepts (1.2 or 1.3)", t.MinVersion)
	}
	switch t.ClientAuth {
	case "", ClientAuthRequire, ClientAuthVerifyIfGiven:
	default:
		v.add(p.key("client_auth"), "%q is unknown (known: require, verify_if_given)", t.ClientAuth)
	}
	if t.ClientCAFile != "" {
		v.caFile(p.key("client_ca_file"), t.ClientCAFile)
	} else if t.ClientAuth != "" {
		v.add(p.key("client_auth"), "needs client_ca_file, the CA that signs the client certificates")
	}
	if v.written(p.key("client_cert_header")) && t.ClientCAFile == "" {
		v.add(p.key("client_cert_header"), "needs client_ca_file (without client certificates there is no subject to pass on)")
	}
	if h := t.ClientCertHeader; h != "" && !isToken(h) {
		v.add(p.key("client_cert_header"), "%q is not a valid header name", h)
	}
	if t.ACME != nil {
		v.acme(p.key("acme"), t.ACME)
	} else if v.written(p.key("acme")) {
		v.add(p.key("acme"), "is empty; list at least the domains")
	}
}

// certificatePair checks that a certificate and its key can be read, belong
// together, and are valid now.
func (v *validator) certificatePair(p keyPath, certFile, keyFile string) {
	certOK := v.readable(p.key("cert_file"), certFile)
	keyOK := v.readable(p.key("key_file"), keyFile)
	if !certOK || !keyOK {
		return
	}
	now := time.Now()
	pair, err := LoadCertificate(certFile, keyFile, now)
	if err != nil {
		v.add(p.key("cert_file"), "%v", err)
		return
	}
	if leaf := pair.Leaf; leaf.NotAfter.Sub(now) < expiryWarning {
		v.warn(p.key("cert_file"), "%q expires on %s, in %d days", certFile,
			leaf.NotAfter.UTC().Format(time.RFC3339), int(leaf.NotAfter.Sub(now).Hours()/24))
	}
}

// LoadCertificate reads a certificate and its key, and checks that they
// belong together and that the certificate is valid at now. -check and the
// TLS listeners, at start and on every reload, load certificates with it,
// so a listener never serves a pair -check refuses. The errors name the
// files. The returned pair's Leaf is set.
func LoadCertificate(certFile, keyFile string, now time.Time) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cannot use certificate %q with key %q: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil { // GODEBUG=x509keypairleaf=0
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("%q: %w", certFile, err)
		}
	}
	switch leaf := pair.Leaf; {
	case now.After(leaf.NotAfter):
		return tls.Certificate{}, fmt.Errorf("%q expired on %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return tls.Certificate{}, fmt.Errorf("%q is not valid before %s", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return pair, nil
}

// caFile checks a PEM file of CA certificates.
func (v *validator) caFile(p keyPath, name string) {
	if !v.readable(p, name) {
		return
	}
	data, err := os.ReadFile(name)
	if err != nil {
		v.add(p, "cannot read %q: %v", name, err)
		return
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		v.add(p, "%q holds no PEM certificate", name)
	}
}

func (v *validator) acme(p keyPath, a *ACME) {
	if len(a.Domains) == 0 {
		v.add(p.key("domains"), "at least one domain is needed")
	}
	for i, d := range a.Domains {
		if strings.HasPrefix(d, "*.") {
			v.add(p.key("domains").index(i), "%q: wildcard names need the DNS-01 challenge, which wsgate does not answer; list the names", d)
		} else if net.ParseIP(d) != nil {
			v.add(p.key("domains").index(i), "%q: ACME certificates here are for DNS names; clients send no SNI for an IP address", d)
		} else if !validHostName(d) || !strings.Contains(d, ".") {
			v.add(p.key("domains").index(i), "%q is not a DNS name with a dot (a CA issues none for a bare name such as localhost)", d)
		}
	}
	if u, err := url.Parse(a.DirectoryURL); err != nil || u.Scheme != "https" || u.Host == "" {
		v.add(p.key("directory_url"), "%q is not an https:// URL", a.DirectoryURL)
	}
	if a.CAFile != "" {
		v.caFile(p.key("ca_file"), a.CAFile)
	}
	if fi, err := os.Stat(a.StorageDir); err == nil && !fi.IsDir() {
		v.add(p.key("storage_dir"), "%q is not a directory", a.StorageDir)
	}
}

// acmeStorage checks that a name listed in the acme blocks of several
// listeners has one storage_dir. Each listener's manager answers the CA's
// challenges for its names (HTTP-01 on a plain listener goes to the first
// one with the name, TLS-ALPN-01 to whichever listener the CA reaches) and
// finds another manager's challenge answers only in a shared storage_dir.
func (v *validator) acmeStorage(ls []Listener) {
	type first struct {
		listener int
		storage  string
	}
	seen := map[string]first{}
	for i, l := range ls {
		if l.TLS == nil || l.TLS.ACME == nil {
			continue
		}
		storage := filepath.Clean(l.TLS.ACME.StorageDir)
		for j, d := range l.TLS.ACME.Domains {
			name := strings.TrimSuffix(strings.ToLower(d), ".")
			f, dup := seen[name]
			switch {
			case !dup:
				seen[name] = first{i, storage}
			case f.storage != storage:
				v.add(keyPath{"listeners"}.index(i).key("tls").key("acme").key("domains").index(j),
					"%q is also in listeners[%d].tls.acme, whose storage_dir is %q, not %q: listeners sharing a name must share its storage_dir, where each finds the other's answers to the CA's challenges",
					d, f.listener, ls[f.listener].TLS.ACME.StorageDir, l.TLS.ACME.StorageDir)
			}
		}
	}
}

// redirects checks redirect_https: only on plain listeners, and only when
// some listener speaks TLS to redirect to.
func (v *validator) redirects(ls []Listener) {
	hasTLS := false
	for _, l := range ls {
		hasTLS = hasTLS || l.TLS != nil
	}
	for i, l := range ls {
		p := keyPath{"listeners"}.index(i).key("redirect_https")
		switch {
		case !l.RedirectHTTPS:
		case l.TLS != nil:
			v.add(p, "is for plain listeners; this one already speaks TLS")
		case !hasTLS:
			v.add(p, "no listener has tls, so there is no https address to redirect to")
		}
	}
}

// upstreamTLS checks an upstream's tls block.
func (v *validator) upstreamTLS(p keyPath, t *UpstreamTLS) {
	if t == nil {
		if v.written(p) {
			v.add(p, "is empty; write enabled: true to speak TLS to the servers")
		}
		return
	}
	if !t.Enabled {
		v.add(p.key("enabled"), "must be true when tls is written (remove the tls key for plain TCP)")
	}
	if t.CAFile != "" {
		v.caFile(p.key("ca_file"), t.CAFile)
		if t.InsecureSkipVerify {
			v.add(p.key("insecure_skip_verify"), "contradicts ca_file: the CA would never be checked")
		}
	}
	if t.ServerName != "" && !validHostName(t.ServerName) {
		v.add(p.key("server_name"), "%q is not a DNS name", t.ServerName)
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		v.certificatePair(p, t.CertFile, t.KeyFile)
	case t.CertFile != "":
		v.add(p.key("key_file"), "is needed with cert_file")
	case t.KeyFile != "":
		v.add(p.key("cert_file"), "is needed with key_file")
	}
}
