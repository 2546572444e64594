// Command report turns the measurements of bench/run.sh (one JSON object per
// line, written by wsload and by wrk's Lua hook) into bench/results/:
// latest.md (a markdown table of medians with their min-max range over the
// rounds, wsgate/nginx and wsgate/HAProxy ratios, plus the machine),
// latest.json (the same, machine-readable) and ratios.svg (a bar chart of
// the ratios). It prints the markdown on stdout.
//
// A line with "proxy_cpu_s" (the proxy's CPU seconds during the measurement)
// gets a derived metric, "cpu_us_per_op": those seconds in µs divided by the
// operations the line counts (see opsKey).
//
//	report -in raw.jsonl -out bench/results -nginx /usr/sbin/nginx -haproxy /usr/sbin/haproxy
//
// It uses only the standard library, so `make bench` needs nothing beyond Go.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

var targets = []string{"direct", "wsgate", "nginx", "haproxy"}

var targetTitle = map[string]string{"direct": "direct", "wsgate": "wsgate", "nginx": "nginx", "haproxy": "HAProxy"}

// metric is one row of the table.
type metric struct {
	workload, key string
	title         string // the workload, as the table names it
	name          string // the metric, with its unit
	higher        bool   // higher is better
	chart         string // label in ratios.svg; "" = not charted
	format        string
}

// rows lists what the table shows, in order. The charted metrics of each
// workload are its rate and the proxy's CPU per operation (or memory per
// tunnel); latencies and memory details are table-only.
var rows = []metric{
	{"echo_1x64", "msgs_per_s", "echo, 1 conn × 64 B", "round trips/s", true, "echo 1×64 B round trips/s", "%.0f"},
	{"echo_1x64", cpuKey, "echo, 1 conn × 64 B", "proxy CPU µs / round trip", false, "echo 1×64 B CPU / round trip", "%.1f"},
	{"echo_1x64", "p50_us", "echo, 1 conn × 64 B", "p50 µs", false, "", "%.0f"},
	{"echo_1x64", "p99_us", "echo, 1 conn × 64 B", "p99 µs", false, "", "%.0f"},
	{"echo_64x64", "msgs_per_s", "echo, 64 conns × 64 B", "round trips/s", true, "echo 64×64 B round trips/s", "%.0f"},
	{"echo_64x64", cpuKey, "echo, 64 conns × 64 B", "proxy CPU µs / round trip", false, "echo 64×64 B CPU / round trip", "%.1f"},
	{"echo_64x64", "p50_us", "echo, 64 conns × 64 B", "p50 µs", false, "", "%.0f"},
	{"echo_64x64", "p99_us", "echo, 64 conns × 64 B", "p99 µs", false, "", "%.0f"},
	{"bulk_4x1m", "mb_per_s", "bulk, 4 conns × 1 MiB", "MB/s each way", true, "bulk 4×1 MiB MB/s", "%.0f"},
	{"bulk_4x1m", cpuKey, "bulk, 4 conns × 1 MiB", "proxy CPU µs / MiB echoed", false, "bulk CPU / MiB echoed", "%.0f"},
	{"handshake_16", "handshakes_per_s", "ws handshakes, 16 workers", "open+echo+close /s", true, "ws handshakes/s", "%.0f"},
	{"handshake_16", cpuKey, "ws handshakes, 16 workers", "proxy CPU µs / handshake", false, "ws CPU / handshake", "%.0f"},
	{"http_wrk", "req_per_s", "HTTP GET /hello, wrk 2 thr × 64 conns", "requests/s", true, "HTTP requests/s", "%.0f"},
	{"http_wrk", cpuKey, "HTTP GET /hello, wrk 2 thr × 64 conns", "proxy CPU µs / request", false, "HTTP CPU / request", "%.1f"},
	{"http_wrk", "p50_us", "HTTP GET /hello, wrk 2 thr × 64 conns", "p50 µs", false, "", "%.0f"},
	{"http_wrk", "p99_us", "HTTP GET /hello, wrk 2 thr × 64 conns", "p99 µs", false, "", "%.0f"},
	{"wss_echo_64x64", "msgs_per_s", "wss echo, 64 conns × 64 B", "round trips/s", true, "wss echo 64×64 B round trips/s", "%.0f"},
	{"wss_echo_64x64", cpuKey, "wss echo, 64 conns × 64 B", "proxy CPU µs / round trip", false, "wss echo CPU / round trip", "%.1f"},
	{"wss_echo_64x64", "p50_us", "wss echo, 64 conns × 64 B", "p50 µs", false, "", "%.0f"},
	{"wss_echo_64x64", "p99_us", "wss echo, 64 conns × 64 B", "p99 µs", false, "", "%.0f"},
	{"wss_handshake_16", "handshakes_per_s", "wss handshakes, 16 workers", "open+echo+close /s", true, "wss handshakes/s", "%.0f"},
	{"wss_handshake_16", cpuKey, "wss handshakes, 16 workers", "proxy CPU µs / handshake", false, "wss CPU / handshake", "%.0f"},
	{"hold", "alive", "idle ws hold", "tunnels alive after idle (of N)", true, "", "%.0f"},
	{"hold", "kib_per_tunnel", "idle ws hold", "RSS growth KiB / tunnel", false, "idle ws: RSS KiB / tunnel", "%.1f"},
	{"hold", "rss_before_kib", "idle ws hold", "RSS before, KiB", false, "", "%.0f"},
	{"hold", "rss_held_kib", "idle ws hold", "RSS holding N tunnels, KiB", false, "", "%.0f"},
	{"hold", "closed_vs_before", "idle ws hold", "RSS after close ÷ before", false, "", "%.2f"},
	{"wss_hold", "alive", "idle wss hold", "tunnels alive after idle (of N)", true, "", "%.0f"},
	{"wss_hold", "kib_per_tunnel", "idle wss hold", "RSS growth KiB / tunnel", false, "idle wss: RSS KiB / tunnel", "%.1f"},
	{"wss_hold", "rss_before_kib", "idle wss hold", "RSS before, KiB", false, "", "%.0f"},
	{"wss_hold", "rss_held_kib", "idle wss hold", "RSS holding N tunnels, KiB", false, "", "%.0f"},
	{"wss_hold", "closed_vs_before", "idle wss hold", "RSS after close ÷ before", false, "", "%.2f"},
}

// cpuKey is the derived metric: the proxy's CPU µs per operation.
const cpuKey = "cpu_us_per_op"

// opsKey names, per wsload mode (wrk's line says "http"), the count of
// operations a measurement did and how many of its units make one
// operation: bulk counts bytes, and its operation is a MiB echoed (sent
// through the proxy and back).
var opsKey = map[string]struct {
	key  string
	unit float64
}{
	"echo":      {"round_trips", 1},
	"handshake": {"handshakes", 1},
	"http":      {"requests", 1},
	"bulk":      {"bytes_each_way", 1 << 20},
}

// Report is latest.json.
type Report struct {
	Date    string            `json:"date"`
	Machine map[string]string `json:"machine"`
	Runs    int               `json:"runs"`
	// Median, Min and Max are over the rounds: workload → metric → target.
	Median map[string]map[string]map[string]float64 `json:"median"`
	Min    map[string]map[string]map[string]float64 `json:"min"`
	Max    map[string]map[string]map[string]float64 `json:"max"`
	Ratios []Ratio                                  `json:"ratios"`
	Notes  []string                                 `json:"notes"`
	Errors []string                                 `json:"errors"`
}

// Ratio is wsgate's median divided by another proxy's. Overlap says whether
// the two min-max ranges overlap, i.e. the rounds do not separate them.
type Ratio struct {
	Workload       string   `json:"workload"`
	Metric         string   `json:"metric"`
	HigherBetter   bool     `json:"higher_is_better"`
	VsNginx        *float64 `json:"wsgate_over_nginx"`
	VsHAProxy      *float64 `json:"wsgate_over_haproxy"`
	OverlapNginx   bool     `json:"ranges_overlap_nginx"`
	OverlapHAProxy bool     `json:"ranges_overlap_haproxy"`
}

func main() {
	in := flag.String("in", "", "measurements, one JSON object per line")
	out := flag.String("out", "bench/results", "directory for latest.md, latest.json, ratios.svg")
	nginx := flag.String("nginx", "nginx", "nginx binary, for its version")
	haproxy := flag.String("haproxy", "haproxy", "haproxy binary, for its version")
	notesFile := flag.String("notes", "", "file of extra notes for the report, one per line")
	elapsed := flag.Duration("elapsed", 0, "total runtime of the benchmark, for the record")
	flag.Parse()
	if err := run(*in, *out, *nginx, *haproxy, *notesFile, *elapsed); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, out, nginx, haproxy, notesFile string, elapsed time.Duration) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	// values[workload][metric][target] = one value per successful run
	values := map[string]map[string]map[string][]float64{}
	var errs []string
	tlsSeen := map[string]map[string]bool{} // target → negotiated TLS parameters
	runs := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			errs = append(errs, fmt.Sprintf("%s:%d: not JSON: %v", in, line, err))
			continue
		}
		wl, _ := m["workload"].(string)
		tg, _ := m["target"].(string)
		r, _ := m["run"].(float64)
		runs = max(runs, int(r))
		if e, ok := m["error"].(string); ok {
			errs = append(errs, fmt.Sprintf("%s on %s, run %d: %s", wl, tg, int(r), e))
			continue
		}
		if wl == "http_wrk" {
			if n := wrkErrors(m); n > 0 {
				errs = append(errs, fmt.Sprintf("%s on %s, run %d: %d socket errors or non-2xx responses (figure kept)", wl, tg, int(r), n))
			}
		}
		if t, ok := m["tls"].(string); ok {
			if tlsSeen[tg] == nil {
				tlsSeen[tg] = map[string]bool{}
			}
			tlsSeen[tg][t] = true
		}
		mode, _ := m["mode"].(string)
		if cpu, ok := m["proxy_cpu_s"].(float64); ok {
			if op, ok := opsKey[mode]; ok {
				if n, _ := m[op.key].(float64); n > 0 {
					m[cpuKey] = cpu * 1e6 / (n / op.unit)
				}
			}
		}
		for k, v := range m {
			fv, ok := v.(float64)
			if !ok {
				continue
			}
			if values[wl] == nil {
				values[wl] = map[string]map[string][]float64{}
			}
			if values[wl][k] == nil {
				values[wl][k] = map[string][]float64{}
			}
			values[wl][k][tg] = append(values[wl][k][tg], fv)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}

	rep := Report{
		Date:    time.Now().UTC().Format(time.RFC3339),
		Machine: machine(nginx, haproxy),
		Runs:    runs,
		Median:  map[string]map[string]map[string]float64{},
		Min:     map[string]map[string]map[string]float64{},
		Max:     map[string]map[string]map[string]float64{},
		Errors:  errs,
	}
	if elapsed > 0 {
		rep.Machine["bench runtime"] = elapsed.Round(time.Second).String()
	}
	for wl, ms := range values {
		for _, agg := range []map[string]map[string]map[string]float64{rep.Median, rep.Min, rep.Max} {
			agg[wl] = map[string]map[string]float64{}
		}
		for k, ts := range ms {
			for _, agg := range []map[string]map[string]map[string]float64{rep.Median, rep.Min, rep.Max} {
				agg[wl][k] = map[string]float64{}
			}
			for tg, vs := range ts {
				rep.Median[wl][k][tg] = median(vs)
				rep.Min[wl][k][tg] = slices.Min(vs)
				rep.Max[wl][k][tg] = slices.Max(vs)
			}
		}
	}
	for _, r := range rows {
		rep.Ratios = append(rep.Ratios, Ratio{
			Workload: r.workload, Metric: r.key, HigherBetter: r.higher,
			VsNginx:        ratio(rep.Median, r, "nginx"),
			VsHAProxy:      ratio(rep.Median, r, "haproxy"),
			OverlapNginx:   overlap(&rep, r, "nginx"),
			OverlapHAProxy: overlap(&rep, r, "haproxy"),
		})
	}
	for _, h := range []struct{ wl, title string }{{"hold", "idle ws hold"}, {"wss_hold", "idle wss hold"}} {
		if hold, ok := rep.Median[h.wl]["conns"]; ok {
			for _, tg := range targets {
				if n, ok := hold[tg]; ok {
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s: N = %.0f tunnels, one 32 KiB echo each", h.title, n))
					break
				}
			}
		}
		if cv, ok := rep.Median[h.wl]["closed_vs_before"]; ok {
			for _, tg := range targets {
				if v, ok := cv[tg]; ok {
					verdict := "within 10% of"
					if v > 1.10 {
						verdict = "more than 10% above"
					}
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s, %s: RSS 3 s after closing every tunnel is %.2f× the RSS before opening them (%s it)", h.title, targetTitle[tg], v, verdict))
				}
			}
		}
	}
	for _, tg := range targets {
		if ps := slices.Sorted(maps.Keys(tlsSeen[tg])); len(ps) > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("wss, %s: negotiated %s", targetTitle[tg], strings.Join(ps, "; ")))
		}
	}
	if notesFile != "" {
		b, err := os.ReadFile(notesFile)
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		for l := range strings.SplitSeq(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				rep.Notes = append(rep.Notes, l)
			}
		}
	}

	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	md := markdown(&rep)
	js, _ := json.MarshalIndent(&rep, "", "  ")
	for name, data := range map[string][]byte{
		"latest.md":   []byte(md),
		"latest.json": append(js, '\n'),
		"ratios.svg":  []byte(svg(&rep)),
	} {
		if err := os.WriteFile(filepath.Join(out, name), data, 0o644); err != nil {
			return err
		}
	}
	fmt.Print(md)
	return nil
}

func wrkErrors(m map[string]any) int {
	n := 0
	for _, k := range []string{"errors_connect", "errors_read", "errors_write", "errors_status", "errors_timeout"} {
		v, _ := m[k].(float64)
		n += int(v)
	}
	return n
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratio is wsgate's median over other's, nil when either is missing or the
// divisor is not positive (a growth of 0 KiB per tunnel has no ratio).
func ratio(med map[string]map[string]map[string]float64, r metric, other string) *float64 {
	ts := med[r.workload][r.key]
	w, ok1 := ts["wsgate"]
	o, ok2 := ts[other]
	if !ok1 || !ok2 || o <= 0 || w < 0 {
		return nil
	}
	v := w / o
	return &v
}

// machine describes where the numbers were taken.
func machine(nginx, haproxy string) map[string]string {
	m := map[string]string{}
	m["nproc"] = firstLine(cmdOut("nproc"))
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	m["kernel"] = firstLine(cmdOut("uname", "-sr"))
	m["nginx"] = firstLine(cmdOut(nginx, "-v"))
	m["haproxy"] = firstLine(cmdOut(haproxy, "-v"))
	m["go"] = firstLine(cmdOut("go", "version"))
	m["wrk"] = firstLine(cmdOut("wrk", "-v"))
	return m
}

// cmdOut runs a command for its version banner; nginx prints it on stderr
// and wrk -v exits 1, so both streams count and the status does not.
func cmdOut(name string, args ...string) string {
	b, _ := exec.Command(name, args...).CombinedOutput()
	return string(b)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	if l == "" {
		return "unknown"
	}
	return l
}

// overlap reports whether wsgate's min-max range and other's overlap.
func overlap(rep *Report, r metric, other string) bool {
	lo, hi := rep.Min[r.workload][r.key], rep.Max[r.workload][r.key]
	wl, ok1 := lo["wsgate"]
	ol, ok2 := lo[other]
	if !ok1 || !ok2 {
		return false
	}
	return wl <= hi[other] && ol <= hi["wsgate"]
}

// cell is the median, with the min-max range over the rounds after it
// when they differ.
func cell(rep *Report, r metric, tg string) string {
	v, ok := rep.Median[r.workload][r.key][tg]
	if !ok {
		return "—"
	}
	s := fmt.Sprintf(r.format, v)
	lo, hi := fmt.Sprintf(r.format, rep.Min[r.workload][r.key][tg]), fmt.Sprintf(r.format, rep.Max[r.workload][r.key][tg])
	if lo != hi {
		s += " (" + lo + "–" + hi + ")"
	}
	return s
}

// ratioCell marks a ratio whose two ranges overlap with "~".
func ratioCell(v *float64, overlap bool) string {
	if v == nil {
		return "—"
	}
	if overlap {
		return fmt.Sprintf("~%.2f", *v)
	}
	return fmt.Sprintf("%.2f", *v)
}

func markdown(rep *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# wsgate vs nginx vs HAProxy (`make bench`)\n\n")
	fmt.Fprintf(&b, "Each cell is the median of %d round(s), with the lowest and highest value in parentheses. Each round ran every target once, in an order rotated from round to round (see Notes). \"direct\" is the client talking to an echo upstream with no proxy (over TLS: one that speaks TLS itself).\n\n", rep.Runs)
	b.WriteString("\"proxy CPU\" is the CPU time (user + system, all threads; nginx's master and workers summed) the proxy's processes spent during the measurement, from /proc/PID/stat, divided by the operations done. It depends far less on how busy the machine is than the rates do, which swing by 30-50% here from run to run: trust it and the medians over any single rate.\n\n")
	b.WriteString("Ratios are wsgate's median ÷ the other proxy's: where higher is better, above 1.00 means wsgate is ahead; where lower is better (CPU, latency, memory), below 1.00 means wsgate is ahead. A ratio marked ~ comes from two ranges that overlap: the rounds do not separate the two proxies.\n\n")
	b.WriteString("| workload | metric | better | direct | wsgate | nginx | HAProxy | wsgate/nginx | wsgate/HAProxy |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|\n")
	for i, r := range rows {
		better := "lower"
		if r.higher {
			better = "higher"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |", r.title, r.name, better)
		for _, tg := range targets {
			fmt.Fprintf(&b, " %s |", cell(rep, r, tg))
		}
		q := rep.Ratios[i]
		fmt.Fprintf(&b, " %s | %s |\n", ratioCell(q.VsNginx, q.OverlapNginx), ratioCell(q.VsHAProxy, q.OverlapHAProxy))
	}
	b.WriteString("\n![wsgate/nginx and wsgate/HAProxy ratios](ratios.svg)\n\n## Machine\n\n")
	keys := make([]string, 0, len(rep.Machine))
	for k := range rep.Machine {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprintf(&b, "- date: %s\n", rep.Date)
	for _, k := range keys {
		fmt.Fprintf(&b, "- %s: %s\n", k, rep.Machine[k])
	}
	if len(rep.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range rep.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	if len(rep.Errors) > 0 {
		b.WriteString("\n## Failed or flawed measurements (left out of the medians)\n\n")
		for _, e := range rep.Errors {
			fmt.Fprintf(&b, "- %s\n", e)
		}
	}
	return b.String()
}

// svg draws one group per charted metric: a bar for wsgate/nginx and one for
// wsgate/HAProxy, on a linear scale from 0 with a dashed line at 1.0.
func svg(rep *Report) string {
	type bar struct {
		label  string
		higher bool
		vs     [2]*float64
	}
	var bars []bar
	top := 1.25
	for i, r := range rows {
		if r.chart == "" {
			continue
		}
		q := rep.Ratios[i]
		bars = append(bars, bar{r.chart, r.higher, [2]*float64{q.VsNginx, q.VsHAProxy}})
		for _, v := range []*float64{q.VsNginx, q.VsHAProxy} {
			if v != nil && !math.IsInf(*v, 0) && *v*1.1 > top {
				top = *v * 1.1
			}
		}
	}
	top = math.Ceil(top*4) / 4
	const (
		w, left, right, rowH, barH, head = 860.0, 250.0, 70.0, 54.0, 18.0, 70.0
	)
	h := head + rowH*float64(len(bars)) + 40
	x := func(v float64) float64 { return left + (w-left-right)*v/top }
	colors := [2]string{"#2f6fb3", "#e08a1e"}
	names := [2]string{"wsgate / nginx", "wsgate / HAProxy"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="Helvetica, Arial, sans-serif" font-size="13">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="16" y="26" font-size="17" font-weight="bold">wsgate relative to nginx and HAProxy (medians of %d round(s))</text>`+"\n", rep.Runs)
	fmt.Fprintf(&b, `<text x="16" y="46" fill="#555">ratio = wsgate ÷ other. Higher-is-better metrics: above 1.0 wsgate wins. Rows marked “lower is better”: below 1.0 wsgate wins.</text>`+"\n")
	for i := range 2 {
		lx := left + float64(i)*170
		fmt.Fprintf(&b, `<rect x="%.0f" y="56" width="12" height="12" fill="%s"/><text x="%.0f" y="66">%s</text>`+"\n", lx, colors[i], lx+18, names[i])
	}
	// grid every 0.25 (every 0.5 when the scale is wide)
	step := 0.25
	if top > 3 {
		step = 0.5
	}
	if top > 6 {
		step = math.Ceil(top / 8)
	}
	for g := 0.0; g <= top+1e-9; g += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#e6e6e6"/>`+"\n", x(g), head+4, x(g), h-30)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#777" font-size="11">%g</text>`+"\n", x(g), h-14, g)
	}
	for i, br := range bars {
		y := head + 10 + rowH*float64(i)
		if br.higher {
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y+barH+4, html.EscapeString(br.label))
		} else {
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y+barH-4, html.EscapeString(br.label))
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#c0392b" font-size="11">lower is better</text>`+"\n", left-8, y+barH+11)
		}
		for j, v := range br.vs {
			by := y + float64(j)*(barH+2)
			if v == nil {
				fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" fill="#999" font-size="11">n/a</text>`+"\n", left+4, by+barH-5)
				continue
			}
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.0f" fill="%s"/>`+"\n", left, by, math.Max(x(*v)-left, 1), barH, colors[j])
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11">%.2f</text>`+"\n", x(*v)+4, by+barH-5, *v)
		}
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="5,4"/>`+"\n", x(1), head+4, x(1), h-30)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" fill="#c0392b" font-size="11" text-anchor="middle">1.0</text>`+"\n", x(1), head)
	b.WriteString("</svg>\n")
	return b.String()
}
