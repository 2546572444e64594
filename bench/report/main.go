// Command report turns the measurements of bench/run.sh (one JSON object per
// line, written by wsload and by wrk's Lua hook) into bench/results/:
// latest.md (a markdown table of medians and wsgate/nginx, wsgate/HAProxy
// ratios, plus the machine), latest.json (the same, machine-readable) and
// ratios.svg (a bar chart of the ratios). It prints the markdown on stdout.
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

// rows lists what the table shows, in order. The charted metric of each
// workload is its headline; latencies and memory details are table-only.
var rows = []metric{
	{"echo_1x64", "msgs_per_s", "echo, 1 conn × 64 B", "round trips/s", true, "echo 1×64 B msgs/s", "%.0f"},
	{"echo_1x64", "p50_us", "echo, 1 conn × 64 B", "p50 µs", false, "", "%.0f"},
	{"echo_1x64", "p99_us", "echo, 1 conn × 64 B", "p99 µs", false, "", "%.0f"},
	{"echo_64x64", "msgs_per_s", "echo, 64 conns × 64 B", "round trips/s", true, "echo 64×64 B msgs/s", "%.0f"},
	{"echo_64x64", "p50_us", "echo, 64 conns × 64 B", "p50 µs", false, "", "%.0f"},
	{"echo_64x64", "p99_us", "echo, 64 conns × 64 B", "p99 µs", false, "echo 64×64 B p99 latency", "%.0f"},
	{"bulk_4x1m", "mb_per_s", "bulk, 4 conns × 1 MiB", "MB/s each way", true, "bulk 4×1 MiB MB/s", "%.0f"},
	{"handshake_16", "handshakes_per_s", "handshakes, 16 workers", "open+echo+close /s", true, "handshakes/s", "%.0f"},
	{"http_wrk", "req_per_s", "HTTP GET /hello, wrk 2 thr × 64 conns", "requests/s", true, "HTTP req/s", "%.0f"},
	{"http_wrk", "p50_us", "HTTP GET /hello, wrk 2 thr × 64 conns", "p50 µs", false, "", "%.0f"},
	{"http_wrk", "p99_us", "HTTP GET /hello, wrk 2 thr × 64 conns", "p99 µs", false, "", "%.0f"},
	{"hold", "alive", "idle hold", "tunnels alive after idle (of N)", true, "", "%.0f"},
	{"hold", "kib_per_tunnel", "idle hold", "RSS growth KiB/tunnel", false, "idle hold: RSS KiB per tunnel", "%.1f"},
	{"hold", "rss_before_kib", "idle hold", "RSS before, KiB", false, "", "%.0f"},
	{"hold", "rss_held_kib", "idle hold", "RSS holding N tunnels, KiB", false, "", "%.0f"},
	{"hold", "closed_vs_before", "idle hold", "RSS after close ÷ before", false, "", "%.2f"},
}

// Report is latest.json.
type Report struct {
	Date    string                                   `json:"date"`
	Machine map[string]string                        `json:"machine"`
	Runs    int                                      `json:"runs"`
	Median  map[string]map[string]map[string]float64 `json:"median"` // workload → metric → target
	// Spread is (max-min)/median over the runs, the noise behind a median.
	Spread map[string]map[string]map[string]float64 `json:"spread"`
	Ratios []Ratio                                  `json:"ratios"`
	Notes  []string                                 `json:"notes"`
	Errors []string                                 `json:"errors"`
}

// Ratio is wsgate's median divided by another proxy's.
type Ratio struct {
	Workload     string   `json:"workload"`
	Metric       string   `json:"metric"`
	HigherBetter bool     `json:"higher_is_better"`
	VsNginx      *float64 `json:"wsgate_over_nginx"`
	VsHAProxy    *float64 `json:"wsgate_over_haproxy"`
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
		Spread:  map[string]map[string]map[string]float64{},
		Errors:  errs,
	}
	if elapsed > 0 {
		rep.Machine["bench runtime"] = elapsed.Round(time.Second).String()
	}
	for wl, ms := range values {
		rep.Median[wl] = map[string]map[string]float64{}
		rep.Spread[wl] = map[string]map[string]float64{}
		for k, ts := range ms {
			rep.Median[wl][k] = map[string]float64{}
			rep.Spread[wl][k] = map[string]float64{}
			for tg, vs := range ts {
				m := median(vs)
				rep.Median[wl][k][tg] = m
				if m != 0 {
					rep.Spread[wl][k][tg] = (slices.Max(vs) - slices.Min(vs)) / math.Abs(m)
				}
			}
		}
	}
	for _, r := range rows {
		rep.Ratios = append(rep.Ratios, Ratio{
			Workload: r.workload, Metric: r.key, HigherBetter: r.higher,
			VsNginx:   ratio(rep.Median, r, "nginx"),
			VsHAProxy: ratio(rep.Median, r, "haproxy"),
		})
	}
	if hold, ok := rep.Median["hold"]["conns"]; ok {
		for _, tg := range targets {
			if n, ok := hold[tg]; ok {
				rep.Notes = append(rep.Notes, fmt.Sprintf("idle hold: N = %.0f tunnels", n))
				break
			}
		}
	}
	if cv, ok := rep.Median["hold"]["closed_vs_before"]; ok {
		for _, tg := range targets {
			if v, ok := cv[tg]; ok {
				verdict := "within 10% of"
				if v > 1.10 {
					verdict = "more than 10% above"
				}
				rep.Notes = append(rep.Notes, fmt.Sprintf("idle hold, %s: RSS 3 s after closing every tunnel is %.2f× the RSS before opening them (%s it)", targetTitle[tg], v, verdict))
			}
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

func cell(med map[string]map[string]map[string]float64, r metric, tg string) string {
	v, ok := med[r.workload][r.key][tg]
	if !ok {
		return "—"
	}
	return fmt.Sprintf(r.format, v)
}

func ratioCell(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f", *v)
}

func markdown(rep *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# wsgate vs nginx vs HAProxy (`make bench`)\n\n")
	fmt.Fprintf(&b, "Medians of %d run(s). Ratios are wsgate ÷ the other proxy: where higher is better, above 1.00 means wsgate is ahead; where lower is better (latency, memory), below 1.00 means wsgate is ahead. \"direct\" is the client talking to one echo upstream with no proxy.\n\n", rep.Runs)
	b.WriteString("\"run spread\" is the largest (max−min)/median over the runs of any one target: a ratio that differs from 1.00 by less than that is within the noise.\n\n")
	b.WriteString("| workload | metric | better | direct | wsgate | nginx | HAProxy | wsgate/nginx | wsgate/HAProxy | run spread |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, r := range rows {
		better := "lower"
		if r.higher {
			better = "higher"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |", r.title, r.name, better)
		for _, tg := range targets {
			fmt.Fprintf(&b, " %s |", cell(rep.Median, r, tg))
		}
		noise := 0.0
		for _, v := range rep.Spread[r.workload][r.key] {
			noise = max(noise, v)
		}
		fmt.Fprintf(&b, " %s | %s | %.0f%% |\n", ratioCell(rep.Ratios[i].VsNginx), ratioCell(rep.Ratios[i].VsHAProxy), 100*noise)
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
	fmt.Fprintf(&b, `<text x="16" y="26" font-size="17" font-weight="bold">wsgate relative to nginx and HAProxy (median of %d run(s))</text>`+"\n", rep.Runs)
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
