package tests

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/config"
	"gopkg.in/yaml.v3"
)

// No container engine runs on the test machines, so the Dockerfile is
// checked as text: its structure, and that what it says agrees with the
// Makefile, go.mod, .dockerignore and the Kubernetes ConfigMap.

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

// stage is one FROM and the instructions under it.
type stage struct {
	image, name string
	body        []instruction
}

// parseDockerfile splits a Dockerfile into stages. It knows comments,
// blank lines and backslash continuations, which is all this repository's
// Dockerfile uses; heredocs and a changed escape character are refused.
func parseDockerfile(t *testing.T, text string) []stage {
	t.Helper()
	var stages []stage
	var cur strings.Builder
	start := 0
	lines := strings.Split(text, "\n")
	for i, raw := range lines {
		line := strings.TrimSpace(raw)
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // comment lines inside a continuation are dropped
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		full := cur.String()
		cur.Reset()
		if strings.Contains(full, "<<") {
			t.Fatalf("Dockerfile:%d: heredocs are not understood by this check", start)
		}
		cmd, args, _ := strings.Cut(full, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			st := stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile:%d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
	}
	if cur.Len() > 0 {
		t.Fatal("Dockerfile ends in a continuation line")
	}
	return stages
}

// last returns the last instruction cmd of a stage.
func (s stage) last(cmd string) (instruction, bool) {
	for i := len(s.body) - 1; i >= 0; i-- {
		if s.body[i].cmd == cmd {
			return s.body[i], true
		}
	}
	return instruction{}, false
}

// execForm decodes a JSON-array (exec form) argument.
func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(in.args), &v); err != nil {
		t.Fatalf("Dockerfile:%d: %s %s is not in exec form (a JSON array): %v", in.line, in.cmd, in.args, err)
	}
	return v
}

// kubeConfigPorts returns the listener and admin ports of the wsgate.yaml
// in deploy/kubernetes/configmap.yaml, after checking that it loads.
func kubeConfigPorts(t *testing.T) []int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(moduleRoot, "deploy", "kubernetes", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(data, &cm); err != nil {
		t.Fatalf("configmap.yaml: %v", err)
	}
	cfg, err := config.Parse("configmap.yaml data.wsgate.yaml", []byte(cm.Data["wsgate.yaml"]))
	if err != nil {
		t.Fatalf("configmap.yaml: %v", err)
	}
	ports := []int{portOf(t, cfg.Admin.Address)}
	for _, l := range cfg.Listeners {
		ports = append(ports, portOf(t, l.Address))
	}
	slices.Sort(ports)
	return ports
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	text, err := os.ReadFile(filepath.Join(moduleRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages := parseDockerfile(t, string(text))
	if len(stages) < 2 {
		t.Fatalf("%d stages; want a builder and a final stage", len(stages))
	}
	final := stages[len(stages)-1]

	// The builder's Go is go.mod's: an older one would refuse the module
	// (or fetch another toolchain), a newer one builds what no test ran.
	gomod, err := os.ReadFile(filepath.Join(moduleRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("go.mod has no go line")
	}

	// The binary is built by `make build` in a builder stage and copied
	// from where that RUN put it into the final stage.
	var builder *stage
	var bin string
	for i := range stages[:len(stages)-1] {
		for _, in := range stages[i].body {
			f := strings.Fields(in.args)
			if in.cmd != "RUN" || len(f) < 2 || f[0] != "make" || f[1] != "build" {
				continue
			}
			builder = &stages[i]
			bin = "bin/wsgate"
			for _, a := range f[2:] {
				if v, ok := strings.CutPrefix(a, "BIN="); ok {
					bin = v
				}
			}
		}
	}
	if builder == nil {
		t.Fatal("no RUN make build in a build stage: the image must be built by the Makefile's command")
	}
	if want := "golang:" + string(goVersion[1]); builder.image != want && !strings.HasPrefix(builder.image, want+"-") {
		t.Errorf("builder image %s; want %s, go.mod's Go", builder.image, want)
	}
	copied := false
	for _, in := range final.body {
		if in.cmd == "COPY" && slices.Equal(strings.Fields(in.args), []string{"--from=" + builder.name, bin, "/wsgate"}) {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the final stage does not COPY --from=%s %s /wsgate", builder.name, bin)
	}

	user, ok := final.last("USER")
	if !ok {
		t.Error("the final stage sets no USER: it would run as root")
	} else {
		uid, _, _ := strings.Cut(user.args, ":")
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			t.Errorf("Dockerfile:%d: USER %s; want a numeric non-root uid (Kubernetes' runAsNonRoot cannot check a name)", user.line, user.args)
		}
	}

	if sig, ok := final.last("STOPSIGNAL"); !ok || sig.args != "SIGTERM" {
		t.Errorf("STOPSIGNAL %q; want SIGTERM, the signal wsgate drains on", sig.args)
	}
	if ep, ok := final.last("ENTRYPOINT"); !ok || !slices.Equal(execForm(t, ep), []string{"/wsgate"}) {
		t.Errorf("ENTRYPOINT %q; want [\"/wsgate\"]", ep.args)
	}
	if cmd, ok := final.last("CMD"); !ok || !slices.Equal(execForm(t, cmd), []string{"-config", "/etc/wsgate/wsgate.yaml"}) {
		t.Errorf("CMD %q; want [\"-config\", \"/etc/wsgate/wsgate.yaml\"]", cmd.args)
	}

	var exposed []int
	for _, in := range final.body {
		if in.cmd != "EXPOSE" {
			continue
		}
		for _, p := range strings.Fields(in.args) {
			p, proto, _ := strings.Cut(p, "/")
			n, err := strconv.Atoi(p)
			if err != nil || (proto != "" && proto != "tcp") {
				t.Errorf("Dockerfile:%d: EXPOSE %s: want TCP port numbers", in.line, in.args)
				continue
			}
			exposed = append(exposed, n)
		}
	}
	slices.Sort(exposed)
	if want := kubeConfigPorts(t); !slices.Equal(exposed, want) {
		t.Errorf("EXPOSE %v; want the listener and admin ports of deploy/kubernetes/configmap.yaml %v", exposed, want)
	}
}

// dockerIgnored reports whether .dockerignore's patterns exclude the
// slash-separated relative path p: the last pattern matching p or one of
// its parent directories decides, "!" patterns re-include, "**" matches
// any number of directories. This is Docker's rule for the patterns used
// here, not a full implementation of it.
func dockerIgnored(patterns []string, p string) bool {
	ignored := false
	for _, pat := range patterns {
		negate := strings.HasPrefix(pat, "!")
		pat = strings.TrimPrefix(strings.TrimPrefix(pat, "!"), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(pat); i++ {
			switch {
			case strings.HasPrefix(pat[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(pat[i:], "**"):
				re.WriteString(".*")
				i++
			case pat[i] == '*':
				re.WriteString("[^/]*")
			case pat[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(pat[i : i+1]))
			}
		}
		re.WriteString("(/.*)?$")
		if regexp.MustCompile(re.String()).MatchString(p) {
			ignored = !negate
		}
	}
	return ignored
}

// The matcher above must agree with Docker on the pattern shapes used, or
// the check below proves nothing.
func TestDockerIgnoredMatcher(t *testing.T) {
	t.Parallel()
	patterns := []string{".git", "tests", "**/node_modules", "*.md", "/bin", "docs/*.png", "!docs/keep.png"}
	for p, want := range map[string]bool{
		".git":                      true,
		".git/HEAD":                 true,
		".github/x":                 false,
		"tests/main_test.go":        true,
		"proxy/tests.go":            false,
		"node_modules/a/b.js":       true,
		"tests/e2e/node_modules/x":  true,
		"README.md":                 true,
		"proxy/README.md":           false,
		"bin/wsgate":                true,
		"cmd/bin/x.go":              false,
		"docs/a.png":                true,
		"docs/keep.png":             false,
		"docs/sub/a.png":            false,
		"cmd/wsgate/main.go":        false,
		"demo/index.html":           false,
		"internal/shrinkset/set.go": false,
	} {
		if got := dockerIgnored(patterns, p); got != want {
			t.Errorf("dockerIgnored(%s) = %v; want %v", p, got, want)
		}
	}
}

// .dockerignore keeps out of the build context nothing that make build
// needs: go.mod, go.sum, the Makefile, and every source and embedded file
// of the packages ./cmd/wsgate is built from.
func TestDockerignoreKeepsTheBuildInputs(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(moduleRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for line := range strings.Lines(string(data)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	if !dockerIgnored(patterns, ".git") {
		t.Error(".git is sent to the builder: every commit would invalidate the build cache")
	}

	list := exec.Command("go", "list", "-deps", "-f",
		`{{if and .Module .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}`, "./cmd/wsgate")
	list.Dir = moduleRoot
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	inputs := []string{"go.mod", "go.sum", "Makefile"}
	for _, f := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(moduleRoot, f)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, filepath.ToSlash(rel))
	}
	if len(inputs) < 10 {
		t.Fatalf("go list found only %v", inputs)
	}
	for _, in := range inputs {
		if dockerIgnored(patterns, in) {
			t.Errorf(".dockerignore excludes %s, which make build needs", in)
		}
	}
}
