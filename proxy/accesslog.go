package proxy

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// logLine builds one text access log line without fmt: "key=value" fields
// after a fixed prefix.
type logLine []byte

func newLogLine(start time.Time) logLine {
	b := make(logLine, 0, 256)
	return start.UTC().AppendFormat(b, time.RFC3339)
}

func (b logLine) word(s string) logLine { return append(append(b, ' '), s...) }

func (b logLine) str(key, v string) logLine {
	return append(append(append(append(b, ' '), key...), '='), v...)
}

func (b logLine) int(key string, v int64) logLine {
	return strconv.AppendInt(append(append(append(b, ' '), key...), '='), v, 10)
}

// count writes v, or "-" for a negative (unknown) count.
func (b logLine) count(key string, v int64) logLine {
	if v < 0 {
		return b.str(key, "-")
	}
	return b.int(key, v)
}

// failed adds "failed=SIDE" when side is not empty.
func (b logLine) failed(side string) logLine {
	if side == "" {
		return b
	}
	return b.str("failed", side)
}

func (b logLine) end() []byte { return append(b, '\n') }

// jsonTime is the form of "time" in JSON access log lines: UTC, to the
// millisecond.
const jsonTime = "2006-01-02T15:04:05.000Z07:00"

// jsonLine builds one JSON access log line, an object on one line, without
// encoding/json's reflection: "time" and "kind" first, then the fields
// in the order they are added.
type jsonLine []byte

func newJSONLine(start time.Time, kind string) jsonLine {
	b := make(jsonLine, 0, 384)
	b = append(b, `{"time":"`...)
	b = start.UTC().AppendFormat(b, jsonTime)
	b = append(b, `","kind":`...)
	return jsonLine(appendJSONString(b, kind))
}

func (b jsonLine) key(k string) jsonLine {
	return append(append(append(b, ',', '"'), k...), '"', ':')
}

func (b jsonLine) str(k, v string) jsonLine { return jsonLine(appendJSONString(b.key(k), v)) }

// opt adds a string the text log writes "-" when there is none, as "".
func (b jsonLine) opt(k, v string) jsonLine {
	if v == "-" {
		v = ""
	}
	return b.str(k, v)
}

func (b jsonLine) int(k string, v int64) jsonLine { return strconv.AppendInt(b.key(k), v, 10) }

// count adds v, or null for a negative (unknown) count.
func (b jsonLine) count(k string, v int64) jsonLine {
	if v < 0 {
		return append(b.key(k), "null"...)
	}
	return b.int(k, v)
}

// closeCode adds "close_code": a WebSocket close status, or null for none.
func (b jsonLine) closeCode(code int) jsonLine {
	if code == 0 {
		return append(b.key("close_code"), "null"...)
	}
	return b.int("close_code", int64(code))
}

func (b jsonLine) ms(k string, d time.Duration) jsonLine {
	return b.int(k, d.Milliseconds())
}

func (b jsonLine) end() []byte { return append(b, '}', '\n') }

// appendJSONString appends s as a JSON string. Bytes that are not UTF-8
// (a request URI may hold any) become U+FFFD, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			// Valid JSON, but not valid JavaScript in older parsers.
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
