package tlsterm

import (
	"crypto/sha256"
	"crypto/tls"
	"os"
	"strings"
	"time"

	"github.com/wsgate/wsgate/config"
)

// certSet is one loaded generation of a listener's certificates, indexed
// by the DNS names they are valid for. It is never changed once built: a
// reload builds a new one and swaps it in.
type certSet struct {
	byName   map[string]*tls.Certificate // exact names and "*.suffix" wildcards, lower case
	fallback *tls.Certificate            // the first certificate: no SNI, or an unknown name
}

// loadCertSet reads every certificate pair of cfg, checked as -check
// checks them (config.LoadCertificate): a pair not valid at now, expired
// or not valid yet, would fail every handshake it served.
func loadCertSet(certs []config.Certificate, now time.Time) (*certSet, error) {
	s := &certSet{byName: map[string]*tls.Certificate{}}
	for _, c := range certs {
		pair, err := config.LoadCertificate(c.CertFile, c.KeyFile, now)
		if err != nil {
			return nil, err
		}
		if s.fallback == nil {
			s.fallback = &pair
		}
		for _, name := range pair.Leaf.DNSNames {
			name = strings.ToLower(name)
			if _, taken := s.byName[name]; !taken { // the first listed wins, as in the file
				s.byName[name] = &pair
			}
		}
	}
	return s, nil
}

// lookup finds the certificate for a client's SNI name: an exact match,
// then a wildcard for its parent domain (one label deep, as RFC 6125
// allows), then the first certificate.
func (s *certSet) lookup(serverName string) *tls.Certificate {
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	if c, ok := s.byName[name]; ok {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c, ok := s.byName["*"+name[i:]]; ok {
			return c
		}
	}
	return s.fallback
}

// fileDigests hashes every certificate and key file, in order, so a poll
// can tell whether anything changed on disk since the last load attempt.
// A file that cannot be read hashes as empty.
func fileDigests(certs []config.Certificate) [][sha256.Size]byte {
	var sums [][sha256.Size]byte
	for _, c := range certs {
		for _, name := range []string{c.CertFile, c.KeyFile} {
			data, _ := os.ReadFile(name)
			sums = append(sums, sha256.Sum256(data))
		}
	}
	return sums
}
