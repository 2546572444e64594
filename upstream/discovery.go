package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ServerSpec is a server as configured, before resolving: an address that
// may name a host in DNS, or an SRV record, with the per-server options.
type ServerSpec struct {
	// Address is host:port; host is an IP address or a DNS name whose A
	// and AAAA records each become a server on port.
	Address string
	// SRV, when set (e.g. "_ws._tcp.chat.example"), replaces Address:
	// each target:port of the record, per resolved address, is a server.
	SRV string
	// Settings apply to every server the spec yields (for SRV, the
	// record's weights and priorities replace Weight and add Backup).
	Settings
}

// Discovery keeps a pool's server list in step with DNS. It owns the whole
// list: every server of the pool must be among its specs.
type Discovery struct {
	pool     *Pool
	specs    []ServerSpec
	resolver *net.Resolver
	interval time.Duration
	logf     func(string, ...any)

	mu      sync.Mutex  // one resolve at a time
	last    [][]*Server // per spec: the servers of its last successful lookup
	failing []bool      // per spec: in a failure streak (logged once)
}

// NewDiscovery returns a Discovery that sets pool's servers from specs.
// resolverAddr is the DNS server (host:port) to ask, or "" for the
// system's resolver; interval (positive) is the time between two
// resolves. logf receives lookup failures and recoveries.
func NewDiscovery(pool *Pool, specs []ServerSpec, resolverAddr string, interval time.Duration, logf func(string, ...any)) *Discovery {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	r := net.DefaultResolver
	if resolverAddr != "" {
		var d net.Dialer
		// The pure Go resolver lets us choose the server; it asks over
		// UDP and falls back to TCP for truncated answers, so both go
		// to resolverAddr.
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, resolverAddr)
		}}
	}
	return &Discovery{pool: pool, specs: specs, resolver: r, interval: interval, logf: logf,
		last: make([][]*Server, len(specs)), failing: make([]bool, len(specs))}
}

// ResolveNow resolves every spec once and sets the pool's servers. It
// returns the lookups that failed or found no address; the gateway calls
// it at startup and refuses to start on error, since a name that resolves
// to nothing there is most likely a configuration mistake.
func (d *Discovery) ResolveNow(ctx context.Context) error {
	return d.resolve(ctx)
}

// Run resolves now and then every interval until ctx ends. A spec whose
// lookup fails keeps the servers of its last successful lookup: a DNS
// outage must not empty the pool. Servers that vanish from DNS take no new
// connections; their live tunnels carry on (see Pool.SetServers).
func (d *Discovery) Run(ctx context.Context) {
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		d.resolve(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *Discovery) resolve(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for i, spec := range d.specs {
		servers, err := d.lookup(ctx, spec)
		if err == nil && len(servers) == 0 {
			err = errors.New("no address")
		}
		if err != nil {
			if ctx.Err() != nil {
				// Shutting down, or the caller's deadline: not news
				// about DNS.
				return errors.Join(append(errs, ctx.Err())...)
			}
			err = fmt.Errorf("upstream %s: resolving %s: %w", d.pool.Name, spec.name(), err)
			errs = append(errs, err)
			if !d.failing[i] {
				d.failing[i] = true
				d.logf("%v; keeping its %d last known servers", err, len(d.last[i]))
			}
			continue
		}
		if d.failing[i] {
			d.failing[i] = false
			d.logf("upstream %s: %s resolves again (%d servers)", d.pool.Name, spec.name(), len(servers))
		}
		d.last[i] = servers
	}
	var list []*Server
	seen := map[string]bool{}
	for _, servers := range d.last {
		for _, s := range servers {
			// Two specs may reach one address; the first one's options
			// win, as one address is one server.
			if !seen[s.Address] {
				seen[s.Address] = true
				list = append(list, s)
			}
		}
	}
	d.pool.SetServers(list)
	return errors.Join(errs...)
}

// name is what the spec asks DNS about, for logs.
func (s ServerSpec) name() string {
	if s.SRV != "" {
		return "SRV " + s.SRV
	}
	return s.Address
}

// lookup returns the servers one spec yields now, in a stable order so
// that an unchanged answer leaves the balancers' state alone.
func (d *Discovery) lookup(ctx context.Context, spec ServerSpec) ([]*Server, error) {
	if spec.SRV != "" {
		return d.lookupSRV(ctx, spec)
	}
	host, port, err := net.SplitHostPort(spec.Address)
	if err != nil {
		return nil, err
	}
	ips, err := d.lookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	servers := make([]*Server, 0, len(ips))
	for _, ip := range ips {
		servers = append(servers, NewServer(net.JoinHostPort(ip, port), spec.Settings))
	}
	return servers, nil
}

// lookupHost returns host's addresses, sorted; an IP address is its own
// answer.
func (d *Discovery) lookupHost(ctx context.Context, host string) ([]string, error) {
	if net.ParseIP(host) != nil {
		return []string{host}, nil
	}
	addrs, err := d.resolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	ips := make([]string, 0, len(addrs))
	for _, a := range addrs {
		ips = append(ips, a.String())
	}
	slices.Sort(ips)
	return slices.Compact(ips), nil
}

// lookupSRV turns an SRV record into servers: one per target:port and
// resolved address; a target without addresses is skipped. As RFC 2782 says, the lowest priority is used first,
// so its targets are the primaries and the others are backups; weights
// become server weights (0, "rarely", is the smallest weight, 1).
func (d *Discovery) lookupSRV(ctx context.Context, spec ServerSpec) ([]*Server, error) {
	_, records, err := d.resolver.LookupSRV(ctx, "", "", spec.SRV)
	if err != nil {
		return nil, err
	}
	if len(records) == 0 {
		return nil, nil
	}
	// Go shuffles records by weight; sort them back so that one answer
	// always yields one list.
	slices.SortFunc(records, func(a, b *net.SRV) int {
		if c := int(a.Priority) - int(b.Priority); c != 0 {
			return c
		}
		if c := strings.Compare(a.Target, b.Target); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	primary := records[0].Priority
	var servers []*Server
	for _, r := range records {
		ips, err := d.lookupHost(ctx, strings.TrimSuffix(r.Target, "."))
		if dnsErr, ok := errors.AsType[*net.DNSError](err); ok && dnsErr.IsNotFound {
			// Registries such as Consul may drop a target's address
			// before its SRV entry: the other targets still serve.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", r.Target, err)
		}
		for _, ip := range ips {
			st := spec.Settings
			st.Weight = int(r.Weight)
			st.Backup = st.Backup || r.Priority != primary
			servers = append(servers, NewServer(net.JoinHostPort(ip, strconv.Itoa(int(r.Port))), st))
		}
	}
	return servers, nil
}
