package httpbody

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readChunked(s string) (string, *Chunked, error) {
	c := NewChunked(bufio.NewReader(strings.NewReader(s)))
	b, err := io.ReadAll(c)
	return string(b), c, err
}

func TestChunkedComplete(t *testing.T) {
	for _, tc := range []struct{ in, body string }{
		{"5\r\nhello\r\n0\r\n\r\n", "hello"},
		{"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world"},
		{"5;ext=1\r\nhello\r\n0;last\r\n\r\n", "hello"},
		{"5 ;ext\r\nhello\r\n0\r\n\r\n", "hello"},
		{"A\r\n0123456789\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n", "0123456789"},
		{"0\r\n\r\n", ""},
		{"000000000000005\r\nhello\r\n0\r\n\r\n", "hello"},
	} {
		body, c, err := readChunked(tc.in)
		if err != nil || body != tc.body || !c.Complete() {
			t.Errorf("%q: body %q err %v complete %v; want %q", tc.in, body, err, c.Complete(), tc.body)
		}
	}
}

func TestChunkedTrailers(t *testing.T) {
	_, c, err := readChunked("5\r\nhello\r\n0\r\nX-Sum: 1\r\nx-other:  2\r\n\r\n")
	if err != nil || string(c.Trailers()) != "X-Sum: 1\r\nx-other:  2\r\n" {
		t.Fatalf("trailers %q, %v", c.Trailers(), err)
	}
	c.Reset(bufio.NewReader(strings.NewReader("0\r\n\r\n")))
	if _, err := io.ReadAll(c); err != nil || len(c.Trailers()) != 0 {
		t.Fatalf("after Reset: trailers %q, %v", c.Trailers(), err)
	}
}

// A chunked body cut anywhere before the end of its trailer section is
// ErrTruncated, never a complete body: at a chunk boundary above all,
// where a lax reader sees a body that simply ended.
func TestChunkedCutAnywhereIsTruncated(t *testing.T) {
	full := "5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
	for i := range len(full) {
		body, c, err := readChunked(full[:i])
		if !errors.Is(err, ErrTruncated) || !errors.Is(err, io.ErrUnexpectedEOF) || c.Complete() {
			t.Errorf("cut after %d bytes (%q): body %q err %v complete %v", i, full[:i], body, err, c.Complete())
		}
	}
}

func TestChunkedMalformed(t *testing.T) {
	for _, in := range []string{
		"x\r\nhello\r\n0\r\n\r\n",
		"5\nhello\r\n0\r\n\r\n",                               // bare LF after the size
		"5\r\nhelloXY0\r\n\r\n",                               // data not followed by CRLF
		"5\r\nhello\r\n0\r\n\n",                               // bare LF ends the trailers
		"5 x\r\nhello\r\n0\r\n\r\n",                           // junk after the size
		"-5\r\nhello\r\n0\r\n\r\n",                            // no digits
		"1000000000000000\r\n",                                // 16 digits
		"5\r\nhello\r\n" + strings.Repeat("a", 5000) + "\r\n", // overlong line
		"0\r\n" + strings.Repeat("X-A: b\r\n", 3000) + "\r\n", // trailers too big
	} {
		body, c, err := readChunked(in)
		if !errors.Is(err, ErrMalformed) || c.Complete() {
			t.Errorf("%.40q: body %q err %v complete %v; want ErrMalformed", in, body, err, c.Complete())
		}
	}
}

// One byte at a time, the decoder carries its state across reads.
func TestChunkedOneByteReads(t *testing.T) {
	in := "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
	c := NewChunked(bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(in)), 16))
	b, err := io.ReadAll(iotest.OneByteReader(c))
	if err != nil || string(b) != "hello world" || !c.Complete() {
		t.Fatalf("body %q err %v", b, err)
	}
}

// The decoder reads nothing past the message: what follows stays in the
// reader, where the caller can see it (a connection with extra bytes is
// not reused).
func TestChunkedStopsAtMessageEnd(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"))
	b, err := io.ReadAll(NewChunked(br))
	if err != nil || string(b) != "hello" {
		t.Fatalf("body %q err %v", b, err)
	}
	if br.Buffered() != len("HTTP/1.1 200 OK\r\n") {
		t.Fatalf("%d bytes left buffered", br.Buffered())
	}
}

func TestFixed(t *testing.T) {
	r := strings.NewReader("hello worldEXTRA")
	f := NewFixed(r, 11)
	b, err := io.ReadAll(f)
	if err != nil || string(b) != "hello world" || !f.Complete() || r.Len() != 5 {
		t.Fatalf("body %q err %v complete %v left %d", b, err, f.Complete(), r.Len())
	}
	f = NewFixed(strings.NewReader("hello"), 1000)
	b, err = io.ReadAll(f)
	if !errors.Is(err, ErrTruncated) || string(b) != "hello" || f.Complete() {
		t.Fatalf("short body: %q err %v complete %v", b, err, f.Complete())
	}
	if f := NewFixed(strings.NewReader(""), 0); !f.Complete() {
		t.Fatal("empty body not complete")
	}
}

// FuzzChunked: whatever the input, the decoder neither panics nor loops,
// and a body it calls complete re-encodes to a message it decodes the
// same way.
func FuzzChunked(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n", "5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\n", "0\r\n\r\n",
		"5\r\nhel", "5\nhello\r\n", "ffffffffffffffff\r\n", "1\r\na\r\n1\r\nb\r\n0\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c := NewChunked(bufio.NewReaderSize(strings.NewReader(in), 64))
		body, err := io.ReadAll(c)
		if (err == nil) != c.Complete() {
			t.Fatalf("err %v but complete %v", err, c.Complete())
		}
		if err != nil && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("unexpected error %v", err)
		}
		if err != nil {
			return
		}
		var enc bytes.Buffer
		if len(body) > 0 {
			enc.WriteString(strings.ToUpper(strconvHex(len(body))) + "\r\n")
			enc.Write(body)
			enc.WriteString("\r\n")
		}
		enc.WriteString("0\r\n\r\n")
		again, err := io.ReadAll(NewChunked(bufio.NewReader(&enc)))
		if err != nil || !bytes.Equal(again, body) {
			t.Fatalf("re-encoded body decodes to %q, %v", again, err)
		}
	})
}

func strconvHex(n int) string {
	const digits = "0123456789abcdef"
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n >>= 4 {
		b = append([]byte{digits[n&15]}, b...)
	}
	return string(b)
}

func BenchmarkChunked(b *testing.B) {
	var msg bytes.Buffer
	chunk := bytes.Repeat([]byte("x"), 4096)
	for range 16 {
		msg.WriteString("1000\r\n")
		msg.Write(chunk)
		msg.WriteString("\r\n")
	}
	msg.WriteString("0\r\n\r\n")
	in := msg.Bytes()
	src := bytes.NewReader(in)
	br := bufio.NewReaderSize(src, 16<<10)
	buf := make([]byte, 32<<10)
	b.ReportAllocs()
	b.SetBytes(int64(16 * len(chunk)))
	for b.Loop() {
		src.Reset(in)
		br.Reset(src)
		c := Chunked{r: br}
		for {
			if _, err := c.Read(buf); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
	}
}
