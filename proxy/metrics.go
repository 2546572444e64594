package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/wsgate/wsgate/relay"
)

// Reasons of wsgate_upstream_failures_total: why an exchange with an
// upstream server failed, as far as the server is to blame (a failure of
// the gateway's own, such as running out of descriptors, is not counted).
const (
	failConnect   = "connect"    // the TCP connection was refused or unreachable
	failTimeout   = "timeout"    // connect, handshake answer or response not in time
	failTLS       = "tls"        // the TLS handshake with the server failed
	failHandshake = "handshake"  // a broken or unacceptable answer to a WebSocket handshake
	failStatus5xx = "status_5xx" // a 5xx answer to a WebSocket handshake (relayed as is)
	failResponse  = "response"   // an HTTP response lost, invalid or cut short
)

// metrics are the gateway's Prometheus metrics, served on the admin
// listener's /metrics. They belong to the process layer: counters run for
// the life of the Gateway, and a generation's routes and upstreams get
// handles on their series by name when the generation is built, so a
// reload continues the same series. Each Gateway has a registry of its
// own (tests run several in one process).
//
// The data plane never looks a series up per message: routes hold their
// handles, the relay's loops add up traffic per tunnel and publish it once
// a second (relay.Meter), and other series are looked up once per request
// or tunnel.
type metrics struct {
	reg *prometheus.Registry

	tunnelsActive     *prometheus.GaugeVec     // route, upstream, server
	handshakes        *prometheus.CounterVec   // route, upstream, code
	handshakeDuration *prometheus.HistogramVec // route
	httpRequests      *prometheus.CounterVec   // route, upstream, code
	httpDuration      *prometheus.HistogramVec // route
	tunnelBytes       *prometheus.CounterVec   // route, direction
	tunnelMessages    *prometheus.CounterVec   // route, direction
	tunnelsClosed     *prometheus.CounterVec   // route, closed_by, close_code
	retries           *prometheus.CounterVec   // upstream
	failures          *prometheus.CounterVec   // upstream, server, reason
	reloads           *prometheus.CounterVec   // result
}

func newMetrics(g *Gateway) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.reg.MustRegister(v)
		return v
	}
	histogram := func(name, help string) *prometheus.HistogramVec {
		v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: prometheus.DefBuckets}, []string{"route"})
		m.reg.MustRegister(v)
		return v
	}
	m.tunnelsActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wsgate_tunnels_active",
		Help: "Open WebSocket tunnels (upgraded connections), by route, upstream and server."},
		[]string{"route", "upstream", "server"})
	m.reg.MustRegister(m.tunnelsActive)
	m.handshakes = counter("wsgate_websocket_handshakes_total",
		"WebSocket handshakes by the status the client got (101 when the tunnel opened); route and upstream are empty when no route matched.",
		"route", "upstream", "code")
	m.handshakeDuration = histogram("wsgate_websocket_handshake_duration_seconds",
		"Time from the client's handshake head read to the 101 relayed, for handshakes that opened a tunnel.")
	m.httpRequests = counter("wsgate_http_requests_total",
		"Plain HTTP requests by the status the client got; route and upstream are empty when no route matched (or the request head could not be read).",
		"route", "upstream", "code")
	m.httpDuration = histogram("wsgate_http_request_duration_seconds",
		"Time from the request head read to the end of the response body, for requests that matched a route.")
	m.tunnelBytes = counter("wsgate_tunnel_bytes_total",
		"Bytes relayed by tunnels after the handshake: up is client to upstream, down upstream to client. Updated at least every second while tunnels live.",
		"route", "direction")
	m.tunnelMessages = counter("wsgate_tunnel_messages_total",
		"Complete WebSocket data messages relayed by frame-following tunnels (not raw or TLS ones), by direction. Updated at least every second while tunnels live.",
		"route", "direction")
	m.tunnelsClosed = counter("wsgate_tunnels_closed_total",
		"Tunnels ended, by who ended them and the status code of the first WebSocket Close frame an endpoint sent (none: no Close seen, or frames not followed).",
		"route", "closed_by", "close_code")
	m.retries = counter("wsgate_upstream_retries_total",
		"Requests and handshakes offered to another server of the upstream after a failed try.", "upstream")
	m.failures = counter("wsgate_upstream_failures_total",
		"Failed exchanges with an upstream server, by reason: connect, timeout, tls, handshake, status_5xx, response.",
		"upstream", "server", "reason")
	m.reloads = counter("wsgate_config_reloads_total", "Configuration reloads requested, by result (ok, error).", "result")
	// The logs count what they drop themselves (logSink.dropped).
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "wsgate_log_lines_dropped_total",
		Help: "Log lines dropped rather than written: the log's queue was full (a slow disk) or its destination refused them."},
		func() float64 { return float64(g.LogLinesDropped()) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "wsgate_config_generation",
		Help: "The generation of the configuration in service: 1 at start, one more at each reload that succeeded."},
		func() float64 {
			if gen := g.gen.Load(); gen != nil {
				return float64(gen.id)
			}
			return 0
		}))
	m.reg.MustRegister(serverUpCollector{g: g, desc: prometheus.NewDesc("wsgate_upstream_server_up",
		"1 when the upstream server may take new connections (in service and, as far as passive and active health know, up), else 0.",
		[]string{"upstream", "server"}, nil)})
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every known reload result shows from the start, at 0: an alert on
	// a rate of errors needs the series before the first one.
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	return m
}

// handler serves the metrics in the Prometheus text format (or what the
// scraper negotiates).
func (m *metrics) handler(errorLog promhttp.Logger) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: errorLog})
}

// Metrics is the handler of GET /metrics on the admin listener.
func (g *Gateway) Metrics() http.Handler { return g.metrics.handler(promLogger{g}) }

// promLogger sends promhttp's errors (a metric that could not be
// gathered) to the error log.
type promLogger struct{ g *Gateway }

func (l promLogger) Println(v ...any) { l.g.errorf("metrics: %s", fmt.Sprint(v...)) }

// reloaded counts a reload by its result.
func (m *metrics) reloaded(err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.reloads.WithLabelValues(result).Inc()
}

// request counts a plain HTTP request, or a handshake that did not become
// a tunnel, once its answer is done.
func (m *metrics) request(l *requestLog) {
	route, upstream := "", ""
	if l.route != nil {
		route, upstream = l.route.metrics.name, l.route.set.name
	}
	code := statusLabel(l.status)
	if l.websocket {
		m.handshakes.WithLabelValues(route, upstream, code).Inc()
		return
	}
	m.httpRequests.WithLabelValues(route, upstream, code).Inc()
	if l.route != nil {
		l.route.metrics.httpDuration.Observe(time.Since(l.start).Seconds())
	}
}

// upstreamFailed counts a failed exchange with server of upstream.
func (m *metrics) upstreamFailed(upstream, server, reason string) {
	m.failures.WithLabelValues(upstream, server, reason).Inc()
}

// tunnelClosed counts an ended tunnel.
func (m *metrics) tunnelClosed(rt *Route, closer Closer, closeCode uint16) {
	code := "none"
	if closeCode != 0 {
		code = strconv.Itoa(int(closeCode))
	}
	m.tunnelsClosed.WithLabelValues(rt.metrics.name, string(closer), code).Inc()
}

// routeMetrics are a route's handles on its series, taken when its
// generation is built. They are the relay.Meter of the route's tunnels.
type routeMetrics struct {
	name                                 string // the route label: host and path prefix, "/chat" or "chat.example.com/"
	bytesUp, bytesDown, msgsUp, msgsDown prometheus.Counter
	switched                             prometheus.Counter // handshakes answered 101
	handshakeDuration, httpDuration      prometheus.Observer
}

func (m *metrics) route(rt *Route, upstream string) *routeMetrics {
	name := rt.Host + rt.Path
	return &routeMetrics{
		name:              name,
		bytesUp:           m.tunnelBytes.WithLabelValues(name, "up"),
		bytesDown:         m.tunnelBytes.WithLabelValues(name, "down"),
		msgsUp:            m.tunnelMessages.WithLabelValues(name, "up"),
		msgsDown:          m.tunnelMessages.WithLabelValues(name, "down"),
		switched:          m.handshakes.WithLabelValues(name, upstream, "101"),
		handshakeDuration: m.handshakeDuration.WithLabelValues(name),
		httpDuration:      m.httpDuration.WithLabelValues(name),
	}
}

// Moved adds a relayed tunnel's traffic (relay.Meter); it runs on a relay
// loop, at most once a second per tunnel.
func (rm *routeMetrics) Moved(t relay.Traffic) {
	rm.bytesUp.Add(float64(t.Up))
	rm.bytesDown.Add(float64(t.Down))
	rm.msgsUp.Add(float64(t.UpMessages))
	rm.msgsDown.Add(float64(t.DownMessages))
}

// upgraded counts a handshake whose 101 went to the client, requested at
// the time its head was read.
func (rm *routeMetrics) upgraded(requested time.Time) {
	rm.switched.Inc()
	rm.handshakeDuration.Observe(time.Since(requested).Seconds())
}

// serverUpCollector reports wsgate_upstream_server_up for the servers of
// the generation in service when scraped.
type serverUpCollector struct {
	g    *Gateway
	desc *prometheus.Desc
}

func (c serverUpCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c serverUpCollector) Collect(ch chan<- prometheus.Metric) {
	gen := c.g.gen.Load()
	if gen == nil {
		return
	}
	for _, name := range gen.upstreamNames() {
		pool := gen.upstreams[name].pool
		for _, s := range pool.Servers() {
			up := 0.0
			if pool.ServerUsable(s) {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, up, name, s.Address)
		}
	}
}

// dialFailureReason says why a dial failed, for the failures counter.
func dialFailureReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout():
		return failTimeout
	case errors.As(err, new(*tlsHandshakeError)):
		return failTLS
	}
	return failConnect
}

// statusLabels are the label values of the HTTP status codes, made once:
// strconv.Itoa would allocate one per request.
var statusLabels = func() (l [500]string) {
	for i := range l {
		l[i] = strconv.Itoa(100 + i)
	}
	return l
}()

func statusLabel(code int) string {
	if code >= 100 && code < 600 {
		return statusLabels[code-100]
	}
	return strconv.Itoa(code)
}

// totals sums the counters the status page shows, and the failures of each
// server by upstream and address. It gathers the registry: a status
// snapshot is made twice a second per open page, not per request.
func (m *metrics) totals() (Totals, map[[2]string]float64) {
	var t Totals
	failures := map[[2]string]float64{}
	families, _ := m.reg.Gather()
	for _, f := range families {
		for _, mt := range f.GetMetric() {
			v := mt.GetCounter().GetValue()
			label := func(name string) string {
				for _, l := range mt.GetLabel() {
					if l.GetName() == name {
						return l.GetValue()
					}
				}
				return ""
			}
			switch f.GetName() {
			case "wsgate_websocket_handshakes_total":
				t.Handshakes += v
			case "wsgate_http_requests_total":
				t.HTTPRequests += v
			case "wsgate_tunnel_messages_total":
				if label("direction") == "up" {
					t.MessagesUp += v
				} else {
					t.MessagesDown += v
				}
			case "wsgate_tunnel_bytes_total":
				if label("direction") == "up" {
					t.BytesUp += v
				} else {
					t.BytesDown += v
				}
			case "wsgate_upstream_failures_total":
				failures[[2]string{label("upstream"), label("server")}] += v
			}
		}
	}
	return t, failures
}
