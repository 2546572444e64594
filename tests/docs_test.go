package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/wsgate/wsgate/config"
	"gopkg.in/yaml.v3"
)

// docFiles lists README.md, first, and every docs/*.md, relative to the
// module root.
func docFiles(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(moduleRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) == 0 {
		t.Fatal("no docs/*.md found")
	}
	files := []string{"README.md"}
	for _, p := range pages {
		rel, err := filepath.Rel(moduleRoot, p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, rel)
	}
	return files
}

// mdDoc is what the link check needs from one Markdown file: its links and
// the anchors of its headings.
type mdDoc struct {
	links   []mdLink
	anchors map[string]bool
}

// mdLink is one inline link or image target and the line it is on.
type mdLink struct {
	line   int
	target string
}

var (
	fenceRE   = regexp.MustCompile("^\\s*(```|~~~)")
	headingRE = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	codeRE    = regexp.MustCompile("`+[^`]*`+")
	// linkRE matches [text](target) and ![alt](target), in a line whose
	// inline code codeRE has already replaced.
	linkRE      = regexp.MustCompile(`!?\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	emphasisRE  = regexp.MustCompile(`[*]+`)
	slugDropRE  = regexp.MustCompile(`[^\p{L}\p{N}\s_-]`)
	schemeRE    = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
	backtickSet = regexp.MustCompile("`([^`]+)`")
)

// parseMarkdown reads a Markdown file's links and heading anchors, outside
// fenced code blocks and inline code.
func parseMarkdown(t *testing.T, path string) mdDoc {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := mdDoc{anchors: make(map[string]bool)}
	seen := make(map[string]int)
	inFence := false
	for i, line := range strings.Split(string(data), "\n") {
		if fenceRE.MatchString(line) {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		if m := headingRE.FindStringSubmatch(line); m != nil {
			slug := githubSlug(m[1])
			// GitHub numbers repeated headings: x, x-1, x-2, ...
			if n := seen[slug]; n > 0 {
				doc.anchors[fmt.Sprintf("%s-%d", slug, n)] = true
			} else {
				doc.anchors[slug] = true
			}
			seen[slug]++
		}
		for _, m := range linkRE.FindAllStringSubmatch(codeRE.ReplaceAllString(line, "code"), -1) {
			doc.links = append(doc.links, mdLink{line: i + 1, target: m[2]})
		}
	}
	return doc
}

// githubSlug is the anchor GitHub gives a heading: the rendered text (no
// backticks, emphasis or link targets), lower-cased, with everything but
// letters, digits, spaces, '-' and '_' dropped and each space made a '-'.
func githubSlug(heading string) string {
	s := linkRE.ReplaceAllString(heading, "$1")
	s = strings.ReplaceAll(s, "`", "")
	s = emphasisRE.ReplaceAllString(s, "")
	s = strings.ToLower(s)
	s = slugDropRE.ReplaceAllString(s, "")
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return '-'
		}
		return r
	}, s)
}

// TestDocsLinks checks that every relative link in README.md and docs/*.md
// names a file or directory that exists, that every #anchor (on the same
// page or on another .md page) is the slug of a heading there, and that
// README.md links to every docs/*.md page.
func TestDocsLinks(t *testing.T) {
	t.Parallel()
	docs := make(map[string]mdDoc) // by path relative to the module root
	files := docFiles(t)
	for _, f := range files {
		docs[f] = parseMarkdown(t, filepath.Join(moduleRoot, f))
	}
	total := 0
	for _, f := range files {
		total += len(docs[f].links)
	}
	if total < 50 {
		t.Fatalf("found only %d links in %d files; the Markdown parsing is broken", total, len(files))
	}
	// The README is the way in: every page must be reachable from it.
	linked := make(map[string]bool)
	for _, l := range docs["README.md"].links {
		file, _, _ := strings.Cut(l.target, "#")
		linked[filepath.Clean(file)] = true
	}
	for _, f := range files[1:] {
		if !linked[f] {
			t.Errorf("README.md has no link to %s", f)
		}
	}
	for _, f := range files {
		for _, l := range docs[f].links {
			if schemeRE.MatchString(l.target) {
				continue // http:, https:, mailto: are not checked
			}
			file, anchor, _ := strings.Cut(l.target, "#")
			target := f
			if file != "" {
				target = filepath.Clean(filepath.Join(filepath.Dir(f), file))
				if _, err := os.Stat(filepath.Join(moduleRoot, target)); err != nil {
					t.Errorf("%s:%d: link %q: %v", f, l.line, l.target, err)
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(target, ".md") {
				t.Errorf("%s:%d: link %q: an anchor into a file that is not Markdown", f, l.line, l.target)
				continue
			}
			d, ok := docs[target]
			if !ok {
				d = parseMarkdown(t, filepath.Join(moduleRoot, target))
				docs[target] = d
			}
			if !d.anchors[anchor] {
				t.Errorf("%s:%d: link %q: %s has no heading with the anchor #%s", f, l.line, l.target, target, anchor)
			}
		}
	}
}

// configKeys walks type t the way the loader decodes YAML into it and adds
// the dotted path of every key it accepts: list items add no segment, the
// names of a mapping of names (upstreams) are "*".
func configKeys(t reflect.Type, prefix string, keys map[string]bool) {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice:
		configKeys(t.Elem(), prefix, keys)
	case reflect.Map:
		configKeys(t.Elem(), joinKey(prefix, "*"), keys)
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name) // yaml.v3's rule for untagged fields
			}
			key := joinKey(prefix, name)
			keys[key] = true
			configKeys(f.Type, key, keys)
		}
	}
}

func joinKey(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// exampleKeys walks a YAML node and adds the dotted path of every mapping
// key, with the same collapsing as configKeys. t is the Go type the node
// decodes into (nil when the loader knows no such key), used to tell a
// mapping of names from a mapping of keys.
func exampleKeys(n *yaml.Node, t reflect.Type, prefix string, keys map[string]bool) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			exampleKeys(c, t, prefix, keys)
		}
	case yaml.AliasNode:
		exampleKeys(n.Alias, t, prefix, keys)
	case yaml.SequenceNode:
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Slice {
			elem = t.Elem()
		}
		for _, c := range n.Content {
			exampleKeys(c, elem, prefix, keys)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			name, val := n.Content[i].Value, n.Content[i+1]
			if t != nil && t.Kind() == reflect.Map {
				exampleKeys(val, t.Elem(), joinKey(prefix, "*"), keys)
				continue
			}
			key := joinKey(prefix, name)
			keys[key] = true
			var ft reflect.Type
			if t != nil && t.Kind() == reflect.Struct {
				for j := range t.NumField() {
					tag, _, _ := strings.Cut(t.Field(j).Tag.Get("yaml"), ",")
					if tag == name {
						ft = t.Field(j).Type
					}
				}
			}
			exampleKeys(val, ft, key, keys)
		}
	}
}

// documentedKeys reads the keys docs/configuration.md documents. Its
// convention: a heading whose first inline code is a dotted path P (such
// as "## `upstreams.*`") opens P's section, and P itself is documented;
// in that section, every inline code in the first cell of a table row is a
// key relative to P (`balance`, `tls.ca_file`, `servers[].weight`). "[]"
// marks a list and is dropped, as list items add no segment to a path.
func documentedKeys(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := make(map[string]bool)
	norm := func(s string) string { return strings.ReplaceAll(s, "[]", "") }
	section, inFence := "", false
	for _, line := range strings.Split(string(data), "\n") {
		if fenceRE.MatchString(line) {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		if m := headingRE.FindStringSubmatch(line); m != nil {
			section = ""
			if c := backtickSet.FindStringSubmatch(m[1]); c != nil {
				section = norm(c[1])
				keys[section] = true
			}
			continue
		}
		if section == "" || !strings.HasPrefix(strings.TrimSpace(line), "|") {
			continue
		}
		cells := strings.Split(strings.TrimSpace(line), "|")
		if len(cells) < 2 {
			continue
		}
		for _, c := range backtickSet.FindAllStringSubmatch(cells[1], -1) {
			keys[joinKey(section, norm(c[1]))] = true
		}
	}
	return keys
}

// TestDocsConfigKeys checks that docs/configuration.md documents every key
// the configuration loader accepts and every key config.example.yaml uses.
func TestDocsConfigKeys(t *testing.T) {
	t.Parallel()
	documented := documentedKeys(t, filepath.Join(moduleRoot, "docs", "configuration.md"))

	accepted := make(map[string]bool)
	configKeys(reflect.TypeFor[config.Config](), "", accepted)
	if len(accepted) < 40 {
		t.Fatalf("found only %d keys in config.Config; the walk is broken", len(accepted))
	}

	data, err := os.ReadFile(filepath.Join(moduleRoot, "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	example := make(map[string]bool)
	exampleKeys(&root, reflect.TypeFor[config.Config](), "", example)
	if len(example) == 0 {
		t.Fatal("no keys found in config.example.yaml")
	}

	for _, src := range []struct {
		name string
		keys map[string]bool
	}{{"accepted by the loader (config.Config)", accepted}, {"used in config.example.yaml", example}} {
		var missing []string
		for k := range src.keys {
			if !documented[k] {
				missing = append(missing, k)
			}
		}
		slices.Sort(missing)
		for _, k := range missing {
			t.Errorf("key %s, %s, is not documented in docs/configuration.md (%s)", k, src.name, howToDocument(k))
		}
	}
}

// howToDocument says where key would be found under documentedKeys'
// convention.
func howToDocument(key string) string {
	i := strings.LastIndex(key, ".")
	if i < 0 {
		return fmt.Sprintf("a heading `%s`", key)
	}
	return fmt.Sprintf("a table row whose first cell has `%s` under a heading `%s`", key[i+1:], key[:i])
}
