package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults filled in by ApplyDefaults.
const (
	defaultBalance        = "least_conn"
	defaultHashKey        = "ip"
	defaultMaxFails       = 1
	defaultFailTimeout    = Duration(10 * time.Second)
	defaultResolve        = Duration(10 * time.Second)
	defaultCheckInterval  = Duration(5 * time.Second)
	defaultCheckTimeout   = Duration(2 * time.Second)
	defaultCheckHealthy   = 2
	defaultCheckUnhealthy = 3
	defaultWeight         = 1
	defaultPath           = "/"
	defaultConnect        = Duration(5 * time.Second)
	defaultHandshake      = Duration(10 * time.Second)
	defaultIdle           = Duration(time.Hour)
	defaultDrain          = Duration(30 * time.Second)
	defaultMaxHeaderBytes = 16384
)

// Load reads, decodes, defaults and validates the configuration file at
// path. A file that cannot be read gives the os error; every problem with
// its content is reported together in an *Error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse decodes, defaults and validates data, the content of a
// configuration file. file is used only to name the file in problems.
// Unknown keys are errors. When the returned error is non-nil it is an
// *Error listing every problem found, and the Config is nil.
func Parse(file string, data []byte) (*Config, error) {
	src, problem := parseTree(file, data)
	if problem != nil {
		return nil, &Error{Problems: []Problem{*problem}}
	}

	// Unknown keys are found by walking the tree ourselves rather than
	// relying on the decoder alone: the walk knows the key path and the keys
	// that are allowed there, which the decoder's message does not say.
	problems := src.unknownKeys(src.root, reflect.TypeFor[Config](), nil)
	unknownAt := make(map[int]bool, len(problems))
	for _, p := range problems {
		unknownAt[p.Line] = true
	}

	c := &Config{File: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			// Not expected, as the same bytes already parsed into a tree;
			// reported rather than lost.
			return nil, &Error{Problems: []Problem{src.problemFromYAML(err.Error())}}
		}
		typeErrs := 0
		for _, msg := range te.Errors {
			p := src.problemFromYAML(msg)
			if unknownAt[p.Line] && strings.Contains(msg, " not found in type ") {
				continue // already reported by unknownKeys, with more detail
			}
			problems = append(problems, p)
			typeErrs++
		}
		// A value that did not decode leaves a zero or nil behind; validating
		// it would add follow-on noise (every route's upstream "not defined"
		// when the upstreams mapping was malformed), so stop here.
		if typeErrs > 0 {
			return nil, newError(problems)
		}
	}

	v := &validator{src: src, problems: problems}
	v.explicitZeros(c)
	c.ApplyDefaults()
	v.config(c)
	if len(v.problems) > 0 {
		return nil, newError(v.problems)
	}
	c.Warnings = v.warnings
	c.src = src
	return c, nil
}

// ApplyDefaults fills every unset field with its default: balance
// least_conn, server weight 1, route path "/", timeouts connect 5s,
// handshake 10s, idle 1h, drain 30s, limits.max_header_bytes 16384, TLS
// min_version 1.2, access_log to stdout and error_log to stderr as text
// (docs/configuration.md lists every key's default).
// Parse calls it; code that builds a Config in Go should call it too.
// It is idempotent and leaves set (even invalid) values alone, so Validate
// still sees them.
func (c *Config) ApplyDefaults() {
	for i := range c.Routes {
		if c.Routes[i].Tunnel == "" {
			c.Routes[i].Tunnel = TunnelWebSocket
		}
		if c.Routes[i].Path == "" {
			c.Routes[i].Path = defaultPath
		}
	}
	for _, u := range c.Upstreams {
		if u == nil {
			continue // Validate reports it
		}
		if u.Balance == "" {
			u.Balance = defaultBalance
		}
		if u.Balance == "hash" && u.HashKey == "" {
			u.HashKey = defaultHashKey
		}
		if u.MaxFails == nil {
			n := defaultMaxFails
			u.MaxFails = &n
		}
		setDuration(&u.FailTimeout, defaultFailTimeout)
		setDuration(&u.ResolveInterval, defaultResolve)
		if hc := u.HealthCheck; hc != nil {
			setDuration(&hc.Interval, defaultCheckInterval)
			setDuration(&hc.Timeout, defaultCheckTimeout)
			if hc.Healthy == 0 {
				hc.Healthy = defaultCheckHealthy
			}
			if hc.Unhealthy == 0 {
				hc.Unhealthy = defaultCheckUnhealthy
			}
			if hc.Path == "" {
				hc.Path = "/"
			}
		}
		for i := range u.Servers {
			if u.Servers[i].Weight == 0 {
				u.Servers[i].Weight = defaultWeight
			}
		}
	}
	for i := range c.Listeners {
		if t := c.Listeners[i].TLS; t != nil {
			t.applyDefaults()
		}
	}
	setDuration(&c.Timeouts.Connect, defaultConnect)
	setDuration(&c.Timeouts.Handshake, defaultHandshake)
	setDuration(&c.Timeouts.Idle, defaultIdle)
	setDuration(&c.Timeouts.Drain, defaultDrain)
	if c.Limits.MaxHeaderBytes == 0 {
		c.Limits.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	c.AccessLog.applyDefaults(LogStdout)
	c.ErrorLog.applyDefaults(LogStderr)
}

func (l *Log) applyDefaults(path string) {
	if l.Path == "" {
		l.Path = path
	}
	if l.Format == "" {
		l.Format = LogText
	}
}

func setDuration(d *Duration, def Duration) {
	if *d == 0 {
		*d = def
	}
}

// UnmarshalYAML decodes a Go duration string such as "5s" or "1h30m".
// Its errors are *yaml.TypeError so that the decoder keeps going and
// reports the other problems of the file too.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if v, err := time.ParseDuration(n.Value); err == nil {
			*d = Duration(v)
			return nil
		}
	}
	// The column lets Parse name the key even in a flow mapping such as
	// "timeouts: {connect: soon}", where the line alone is ambiguous.
	return &yaml.TypeError{Errors: []string{fmt.Sprintf(
		"line %d: column %d: %s is not a duration (write it like \"5s\", \"250ms\" or \"1h30m\")",
		n.Line, n.Column, describeNode(n))}}
}

// describeNode names a node's value for messages: the text of a scalar,
// the kind of anything else.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "this value"
}

// source is the YAML tree a Config was decoded from. It turns key paths
// into line numbers for problems. A Config built in Go has a source with a
// nil root, and its problems carry no line.
type source struct {
	file string
	root *yaml.Node // the top-level mapping

	// Built on first use by pathAt: the key path of the first key or list
	// item on each line, and of the value at each line and column.
	lines     map[int]keyPath
	positions map[[2]int]keyPath
}

// parseTree parses data into a YAML tree and checks that it is a single
// document whose top level is a mapping.
func parseTree(file string, data []byte) (*source, *Problem) {
	src := &source{file: file}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		return nil, &Problem{File: file, Line: 1, Msg: "the file is empty; it needs at least listeners, routes and upstreams"}
	}
	if err != nil {
		p := src.problemFromYAML(err.Error())
		return nil, &p
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			p := src.problemFromYAML(err.Error())
			return nil, &p
		}
		return nil, &Problem{File: file, Line: next.Line, Msg: "a second YAML document starts here; the file must hold exactly one"}
	}
	root := resolve(&doc)
	if len(doc.Content) > 0 {
		root = resolve(doc.Content[0])
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, &Problem{File: file, Line: root.Line, Msg: "the file is empty; it needs at least listeners, routes and upstreams"}
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Problem{File: file, Line: root.Line, Msg: fmt.Sprintf(
			"the top level must be a mapping of keys (listeners, routes, upstreams, ...), not %s", describeNode(root))}
	}
	src.root = root
	return src, nil
}

// resolve follows aliases to the node they stand for.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// isMerge reports whether a mapping key is the "<<" merge key.
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge"
}

// unknownKeys walks n, which decodes into a value of type t, and reports
// every mapping key that matches no field.
func (s *source) unknownKeys(n *yaml.Node, t reflect.Type, path keyPath) []Problem {
	n = resolve(n)
	if n == nil {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var problems []Problem
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields, names := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if isMerge(k) {
				problems = append(problems, s.mergedKeys(val, t, path)...)
				continue
			}
			f, ok := fields[k.Value]
			if !ok {
				problems = append(problems, Problem{
					File: s.file, Line: k.Line, Key: path.key(k.Value).String(),
					Msg: fmt.Sprintf("key %q is not known here (known: %s)", k.Value, strings.Join(names, ", ")),
				})
				continue
			}
			problems = append(problems, s.unknownKeys(val, f.Type, path.key(k.Value))...)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			problems = append(problems, s.unknownKeys(item, t.Elem(), path.index(i))...)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			problems = append(problems, s.unknownKeys(n.Content[i+1], t.Elem(), path.key(n.Content[i].Value))...)
		}
	}
	// Other shapes are either scalars or type mismatches the decoder reports.
	return problems
}

// mergedKeys checks the mapping (or list of mappings) merged in by "<<".
func (s *source) mergedKeys(val *yaml.Node, t reflect.Type, path keyPath) []Problem {
	val = resolve(val)
	if val.Kind != yaml.SequenceNode {
		return s.unknownKeys(val, t, path)
	}
	var problems []Problem
	for _, m := range val.Content {
		problems = append(problems, s.unknownKeys(m, t, path)...)
	}
	return problems
}

// yamlFields maps the YAML keys of struct type t to their fields, and lists
// the keys in declaration order for messages.
func yamlFields(t reflect.Type) (map[string]reflect.StructField, []string) {
	fields := make(map[string]reflect.StructField)
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // yaml.v3's rule for untagged fields
		}
		fields[name] = f
		names = append(names, name)
	}
	return fields, names
}

// lookup finds the node at path and the line to report for it: the line of
// its key (or list item), or, when the path does not exist in the file,
// the line of its deepest existing ancestor.
func (s *source) lookup(path keyPath) (n *yaml.Node, line int, found bool) {
	if s.root == nil {
		return nil, 0, false
	}
	cur, line := s.root, s.root.Line
	for _, elem := range path {
		cur = resolve(cur)
		var next *yaml.Node
		switch e := elem.(type) {
		case string:
			if cur.Kind != yaml.MappingNode {
				return nil, line, false
			}
			for i := 0; i+1 < len(cur.Content); i += 2 {
				if k := cur.Content[i]; k.Kind == yaml.ScalarNode && k.Value == e && !isMerge(k) {
					next, line = cur.Content[i+1], k.Line
				}
			}
		case int:
			if cur.Kind != yaml.SequenceNode || e >= len(cur.Content) {
				return nil, line, false
			}
			next = cur.Content[e]
			line = next.Line
		}
		if next == nil {
			return nil, line, false
		}
		cur = next
	}
	return resolve(cur), line, true
}

// pathAt finds the key path a decoder message is about: that of the value
// at line and column when the message gives a column (column > 0), else
// the first key on that line, or the list item starting there when no key
// does.
func (s *source) pathAt(line, column int) keyPath {
	if s.root == nil {
		return nil
	}
	if s.lines == nil {
		s.lines = make(map[int]keyPath)
		s.positions = make(map[[2]int]keyPath)
		s.indexLines(s.root, nil, 0)
	}
	if p, ok := s.positions[[2]int{line, column}]; ok {
		return p
	}
	return s.lines[line]
}

// indexLines records the path of every key, list item and value. On a
// line the first one wins, and a list item is recorded after its content,
// so that on "- address: x" the key, not the item, is found. depth stops
// alias cycles.
func (s *source) indexLines(n *yaml.Node, path keyPath, depth int) {
	n = resolve(n)
	if n == nil || depth > 64 {
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := path.key(k.Value)
			s.setLine(k.Line, p)
			s.positions[[2]int{val.Line, val.Column}] = p
			s.indexLines(val, p, depth+1)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := path.index(i)
			s.indexLines(item, p, depth+1)
			s.setLine(item.Line, p)
			s.positions[[2]int{item.Line, item.Column}] = p
		}
	}
}

func (s *source) setLine(line int, p keyPath) {
	if _, ok := s.lines[line]; !ok {
		s.lines[line] = p
	}
}

var (
	yamlLineRE     = regexp.MustCompile(`^(?:yaml: )?line (\d+): (?:column (\d+): )?(.*)$`)
	cannotDecodeRE = regexp.MustCompile("^cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
)

// problemFromYAML turns a yaml.v3 message ("yaml: line 3: ..." or
// "line 3: ...", or "line 3: column 7: ..." from Duration) into a Problem
// with the key path found there, rewording the messages that name Go types.
func (s *source) problemFromYAML(msg string) Problem {
	p := Problem{File: s.file, Msg: strings.TrimPrefix(msg, "yaml: ")}
	m := yamlLineRE.FindStringSubmatch(msg)
	if m == nil {
		return p
	}
	p.Line, _ = strconv.Atoi(m[1])
	column, _ := strconv.Atoi(m[2]) // 0 when absent
	p.Msg = m[3]
	p.Key = s.pathAt(p.Line, column).String()
	if m := cannotDecodeRE.FindStringSubmatch(p.Msg); m != nil {
		got := tagNames[m[1]]
		if got == "" {
			got = m[1]
		}
		if m[2] != "" {
			got += " " + strconv.Quote(m[2])
		}
		p.Msg = fmt.Sprintf("expected %s, got %s", goTypeName(m[3]), got)
	}
	return p
}

var tagNames = map[string]string{
	"!!str":   "a string",
	"!!int":   "an integer",
	"!!float": "a number",
	"!!bool":  "a boolean",
	"!!map":   "a mapping",
	"!!seq":   "a list",
	"!!null":  "nothing",
}

// goTypeName describes a Go type named in a decoder message in YAML terms.
func goTypeName(t string) string {
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["), strings.HasPrefix(t, "config."), strings.HasPrefix(t, "*config."):
		return "a mapping"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case t == "string":
		return "a string"
	}
	return t
}

// keyPath addresses a value in the file: string elements are mapping keys,
// int elements list indexes. It prints as routes[1].upstream.
type keyPath []any

func (p keyPath) key(k string) keyPath { return append(p[:len(p):len(p)], k) }

func (p keyPath) index(i int) keyPath { return append(p[:len(p):len(p)], i) }

func (p keyPath) String() string {
	var b strings.Builder
	for _, e := range p {
		switch e := e.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(e)
		case int:
			fmt.Fprintf(&b, "[%d]", e)
		}
	}
	return b.String()
}
