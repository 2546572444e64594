package wsframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
)

const (
	fin  = finBit
	rsv1 = 0x40
	rsv2 = 0x20
	rsv3 = 0x10
)

// Length encodings for header: shortest, or forced 16/64-bit (legal for the
// tracker, which leaves the shortest-form rule to the endpoints).
const (
	encShort = 0
	enc16    = 16
	enc64    = 64
)

var testKey = [4]byte{0x12, 0x34, 0x56, 0x78}

// header builds a frame header. b0 carries FIN, RSV and the opcode.
func header(b0 byte, length uint64, masked bool, enc int) []byte {
	var b1 byte
	if masked {
		b1 = maskBit
	}
	h := []byte{b0, 0}
	switch {
	case enc == encShort && length <= 125:
		h[1] = b1 | byte(length)
	case enc == enc64 || length > 0xffff:
		h[1] = b1 | 127
		h = binary.BigEndian.AppendUint64(h, length)
	default:
		h[1] = b1 | 126
		h = binary.BigEndian.AppendUint16(h, uint16(length))
	}
	if masked {
		h = append(h, testKey[:]...)
	}
	return h
}

// payload returns n bytes full of values that look like frame headers, so a
// tracker that parsed payload would go wrong.
func payload(n int) []byte { return bytes.Repeat([]byte{0x81}, n) }

// frame builds a whole frame with the shortest length encoding.
func frame(b0 byte, n int, masked bool) []byte {
	return append(header(b0, uint64(n), masked, encShort), payload(n)...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestFeedValid(t *testing.T) {
	type tc struct {
		name      string
		client    bool
		max       int64
		stream    []byte
		remaining uint64 // payload still due after stream
		messages  uint64
		atFrame   bool
		atMessage bool
		close     bool
	}
	var tests []tc
	for _, client := range []bool{false, true} {
		for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
			tests = append(tests, tc{name: "len", client: client, stream: frame(fin|opBinary, n, client),
				messages: 1, atFrame: true, atMessage: true})
		}
		for _, enc := range []int{enc16, enc64} {
			tests = append(tests, tc{name: "non-shortest", client: client,
				stream:   cat(header(fin|opText, 5, client, enc), payload(5)),
				messages: 1, atFrame: true, atMessage: true})
		}
		big := uint64(1)<<32 + 1
		tests = append(tests,
			tc{name: "2^32+1", client: client, stream: header(fin|opBinary, big, client, encShort), remaining: big},
			tc{name: "max 64-bit length", client: client, stream: header(fin|opBinary, 1<<63-1, client, encShort), remaining: 1<<63 - 1},
			tc{name: "partial header", client: client, stream: header(fin|opBinary, 300, client, encShort)[:3]},
			tc{name: "partial payload", client: client, stream: frame(fin|opBinary, 10, client)[:len(header(0, 10, client, encShort))+3],
				remaining: 7},
			tc{name: "control frames between fragments", client: client,
				stream: cat(frame(opText, 3, client), frame(fin|opPing, 125, client), frame(opContinuation, 0, client),
					frame(fin|opPong, 0, client), frame(fin|opContinuation, 4, client)),
				messages: 1, atFrame: true, atMessage: true},
			tc{name: "fragmented message open", client: client,
				stream:  cat(frame(opBinary, 3, client), frame(fin|opPing, 1, client)),
				atFrame: true},
			tc{name: "close", client: client, stream: frame(fin|opClose, 2, client),
				atFrame: true, atMessage: true, close: true},
			tc{name: "close stays seen", client: client, stream: cat(frame(fin|opClose, 0, client), frame(fin|opPing, 0, client)),
				atFrame: true, atMessage: true, close: true},
			tc{name: "close header only", client: client, stream: header(fin|opClose, 2, client, encShort),
				remaining: 2, close: true},
			tc{name: "rsv bits pass", client: client,
				stream:   cat(frame(fin|rsv1|rsv2|rsv3|opText, 3, client), frame(fin|rsv2|opPing, 0, client)),
				messages: 1, atFrame: true, atMessage: true},
			tc{name: "limit reached exactly", client: client, max: 10,
				stream: cat(frame(opText, 6, client), frame(fin|opPing, 20, client), frame(fin|opContinuation, 4, client),
					frame(fin|opBinary, 10, client)),
				messages: 2, atFrame: true, atMessage: true},
		)
	}
	for _, tt := range tests {
		tr := New(tt.client, tt.max)
		n, err := tr.Feed(tt.stream)
		if n != len(tt.stream) || err != nil {
			t.Errorf("%s (client=%v): Feed = %d, %v; want %d, nil", tt.name, tt.client, n, err, len(tt.stream))
			continue
		}
		type state struct {
			remaining, messages       uint64
			atFrame, atMessage, close bool
		}
		got := state{tr.remaining, tr.Messages(), tr.AtFrameBoundary(), atMessageBoundary(&tr), tr.CloseSeen()}
		want := state{tt.remaining, tt.messages, tt.atFrame, tt.atMessage, tt.close}
		if got != want {
			t.Errorf("%s (client=%v): state %+v, want %+v", tt.name, tt.client, got, want)
		}
	}
}

func TestFeedErrors(t *testing.T) {
	ok := func(client bool) []byte { return frame(fin|opText, 3, client) } // one valid frame before the bad one
	type tc struct {
		name   string
		client bool
		max    int64
		prefix []byte // valid: consumed; msgs is its message count
		msgs   uint64
		bad    []byte
		want   error
	}
	var tests []tc
	for _, client := range []bool{false, true} {
		tests = append(tests,
			tc{"mask bit wrong", client, 0, ok(client), 1, frame(fin|opText, 3, !client), ErrMask},
			tc{"mask bit wrong on control", client, 0, ok(client), 1, frame(fin|opPing, 0, !client), ErrMask},
			tc{"control too long 16-bit", client, 0, ok(client), 1, frame(fin|opPing, 126, client), ErrControlTooLong},
			tc{"close too long", client, 0, ok(client), 1, frame(fin|opClose, 126, client), ErrControlTooLong},
			tc{"pong too long 64-bit", client, 0, ok(client), 1, cat(header(fin|opPong, 126, client, enc64), payload(126)), ErrControlTooLong},
			tc{"ping fragmented", client, 0, ok(client), 1, frame(opPing, 0, client), ErrControlFragmented},
			tc{"close fragmented", client, 0, ok(client), 1, frame(opClose, 2, client), ErrControlFragmented},
			tc{"continuation first", client, 0, nil, 0, frame(fin|opContinuation, 1, client), ErrContinuation},
			tc{"continuation after message", client, 0, ok(client), 1, frame(fin|opContinuation, 1, client), ErrContinuation},
			tc{"data frame inside fragmented message", client, 0,
				cat(frame(opText, 1, client), frame(fin|opPing, 0, client)), 0, frame(fin|opBinary, 1, client), ErrContinuation},
			tc{"64-bit length top bit", client, 0, ok(client), 1, header(fin|opBinary, 1<<63, client, encShort), ErrLength},
			tc{"single frame over limit", client, 10, ok(client), 1, frame(fin|opBinary, 11, client), ErrMessageTooBig},
			tc{"fragments over limit", client, 10,
				cat(frame(opBinary, 6, client), frame(fin|opPing, 50, client)), 0, frame(fin|opContinuation, 5, client), ErrMessageTooBig},
			tc{"huge length over limit", client, 10, ok(client), 1, header(fin|opBinary, 1<<63-1, client, encShort), ErrMessageTooBig},
		)
		for _, op := range []byte{0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF} {
			tests = append(tests, tc{"reserved opcode", client, 0, ok(client), 1, frame(fin|op, 0, client), ErrReservedOpcode})
		}
	}
	for _, tt := range tests {
		name := tt.name
		if tt.client {
			name += " (client)"
		}
		tr := New(tt.client, tt.max)
		n, err := tr.Feed(cat(tt.prefix, tt.bad, ok(tt.client)))
		if n != len(tt.prefix) || err != tt.want {
			t.Errorf("%s: Feed = %d, %v; want %d, %v", name, n, err, len(tt.prefix), tt.want)
			continue
		}
		if isProto := errors.Is(err, ErrProtocol); isProto == (tt.want == ErrMessageTooBig) {
			t.Errorf("%s: errors.Is(err, ErrProtocol) = %v", name, isProto)
		}
		if !tr.AtFrameBoundary() || tr.Messages() != tt.msgs || tr.remaining != 0 {
			t.Errorf("%s: after error AtFrameBoundary=%v Messages=%d remaining=%d; want true, %d, 0",
				name, tr.AtFrameBoundary(), tr.Messages(), tr.remaining, tt.msgs)
		}
		if n, err := tr.Feed(ok(tt.client)); n != 0 || err != tt.want {
			t.Errorf("%s: Feed after error = %d, %v; want 0, %v", name, n, err, tt.want)
		}
		if tr.Messages() != tt.msgs {
			t.Errorf("%s: Messages after error = %d, want %d", name, tr.Messages(), tt.msgs)
		}
	}
}

// A bad header split across calls: its start was consumed by the first call,
// so the second reports n = 0 and the tracker is not at a frame boundary.
func TestErrorInSplitHeader(t *testing.T) {
	for _, cut := range []int{1, 2, 3} {
		tr := New(false, 10)
		first := cat(frame(fin|opText, 3, false), header(fin|opBinary, 300, false, encShort)[:cut])
		if n, err := tr.Feed(first); n != len(first) || err != nil {
			t.Fatalf("cut %d: first Feed = %d, %v", cut, n, err)
		}
		rest := header(fin|opBinary, 300, false, encShort)[cut:]
		if n, err := tr.Feed(rest); n != 0 || err != ErrMessageTooBig {
			t.Errorf("cut %d: second Feed = %d, %v; want 0, ErrMessageTooBig", cut, n, err)
		}
		if tr.AtFrameBoundary() || tr.Messages() != 1 {
			t.Errorf("cut %d: AtFrameBoundary=%v Messages=%d; want false, 1", cut, tr.AtFrameBoundary(), tr.Messages())
		}
	}
}

func TestZeroTrackerPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Feed on a zero Tracker did not panic")
		}
	}()
	var tr Tracker
	tr.Feed([]byte{0x81, 0x80, 0, 0, 0, 0})
}

// The relay embeds two Trackers per tunnel; keep the type free of anything
// the garbage collector has to scan or that would alias between copies.
func TestTrackerHasNoPointers(t *testing.T) {
	typ := reflect.TypeFor[Tracker]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		switch f.Type.Kind() {
		case reflect.Bool, reflect.Uint8, reflect.Uint16, reflect.Uint64, reflect.Int64:
		case reflect.Array:
			if f.Type.Elem().Kind() != reflect.Uint8 {
				t.Errorf("field %s: array of %s", f.Name, f.Type.Elem())
			}
		default:
			t.Errorf("field %s has kind %s", f.Name, f.Type.Kind())
		}
	}
}

// model is a stream together with the expected tracker state at every offset.
type model struct {
	data     []byte
	frames   []modelFrame
	openThen []bool // openThen[i]: a fragmented message is open after frames[:i]
	msgsThen []uint64
	// The first Close frame: its code is known once closeAt bytes were fed.
	closeCode uint16
	closeAt   int
}

type modelFrame struct{ start, payload, end int }

// add appends a frame and records its offsets; length may be 0 for header-only use.
func (m *model) add(b0 byte, length int, masked bool, enc int) {
	if m.openThen == nil {
		m.openThen, m.msgsThen = []bool{false}, []uint64{0}
	}
	start := len(m.data)
	m.data = append(m.data, header(b0, uint64(length), masked, enc)...)
	pl := len(m.data)
	m.data = append(m.data, payload(length)...)
	m.frames = append(m.frames, modelFrame{start, pl, len(m.data)})
	if b0&0x0f == opClose && m.closeAt == 0 {
		m.closeCode, m.closeAt = modelCloseCode(m.data[pl:], masked), pl+2
		if length == 0 {
			m.closeAt = pl
		}
	}
	open, msgs := m.openThen[len(m.openThen)-1], m.msgsThen[len(m.msgsThen)-1]
	if op := b0 & 0x0f; op < opClose {
		open = b0&fin == 0
		if !open {
			msgs++
		}
	}
	m.openThen = append(m.openThen, open)
	m.msgsThen = append(m.msgsThen, msgs)
}

// check compares the tracker, having consumed m.data[:pos], with the model.
func (m *model) check(tb testing.TB, tr *Tracker, pos int, how string) {
	tb.Helper()
	done := sort.Search(len(m.frames), func(i int) bool { return m.frames[i].end > pos })
	atFrame, remaining := true, uint64(0)
	if done < len(m.frames) && pos > m.frames[done].start {
		atFrame = false
		if f := m.frames[done]; pos >= f.payload {
			remaining = uint64(f.end - pos)
		}
	}
	if tr.AtFrameBoundary() != atFrame || atMessageBoundary(tr) != (atFrame && !m.openThen[done]) ||
		tr.remaining != remaining || tr.Messages() != m.msgsThen[done] {
		tb.Fatalf("%s, at offset %d: AtFrameBoundary=%v at message boundary=%v remaining=%d Messages=%d; "+
			"want %v %v %d %d", how, pos, tr.AtFrameBoundary(), atMessageBoundary(tr), tr.remaining,
			tr.Messages(), atFrame, atFrame && !m.openThen[done], remaining, m.msgsThen[done])
	}
	wantCode := uint16(0)
	if m.closeAt > 0 && pos >= m.closeAt {
		wantCode = m.closeCode
	}
	if tr.CloseCode() != wantCode {
		tb.Fatalf("%s, at offset %d: CloseCode=%d, want %d", how, pos, tr.CloseCode(), wantCode)
	}
}

// modelCloseCode is the status code of a Close frame with payload pl as
// the wire carries it (masked with testKey when masked), decoded
// independently of the package: 1005 without payload, 0 for one byte.
func modelCloseCode(pl []byte, masked bool) uint16 {
	switch len(pl) {
	case 0:
		return 1005
	case 1:
		return 0
	}
	b := bytes.Clone(pl[:2])
	if masked {
		xorKey(b, testKey)
	}
	return binary.BigEndian.Uint16(b)
}

func (m *model) feed(tb testing.TB, tr *Tracker, from, to int, how string) {
	tb.Helper()
	if n, err := tr.Feed(m.data[from:to]); n != to-from || err != nil {
		tb.Fatalf("%s: Feed(data[%d:%d]) = %d, %v", how, from, to, n, err)
	}
	m.check(tb, tr, to, how)
}

func TestSplits(t *testing.T) {
	for _, client := range []bool{false, true} {
		var m model
		m.add(fin|opText, 0, client, encShort)
		m.add(fin|opBinary, 125, client, encShort)
		m.add(opText, 126, client, encShort)
		m.add(fin|opPing, 3, client, encShort)
		m.add(opContinuation, 7, client, enc64)
		m.add(fin|opPong, 125, client, enc16)
		m.add(fin|rsv1|opContinuation, 1, client, encShort)
		m.add(fin|opBinary, 65535, client, encShort)
		m.add(fin|opBinary, 65536, client, encShort)
		m.add(opBinary, 2, client, enc16)
		m.add(fin|opContinuation, 0, client, enc64)
		m.add(fin|opClose, 2, client, encShort)

		for cut := range len(m.data) + 1 {
			tr := New(client, 0)
			m.feed(t, &tr, 0, cut, "single cut")
			m.feed(t, &tr, cut, len(m.data), "single cut")
		}
		tr := New(client, 0)
		for i := range m.data {
			m.feed(t, &tr, i, i+1, "byte by byte")
		}
		if tr.Messages() != 6 || !tr.CloseSeen() {
			t.Errorf("end: Messages=%d CloseSeen=%v; want 6, true", tr.Messages(), tr.CloseSeen())
		}
	}
}

// randomStream builds a valid stream of mixed frames: fragmented messages
// with control frames between fragments, edge lengths, all three length
// encodings, random RSV bits.
func randomStream(r *rand.Rand, client bool) *model {
	edge := []int{0, 1, 125, 126, 127, 65535, 65536}
	dataLen := func() int {
		if r.IntN(8) == 0 {
			return edge[r.IntN(len(edge))]
		}
		return r.IntN(300)
	}
	enc := func(n int) int {
		switch {
		case r.IntN(8) != 0:
			return encShort
		case n <= 0xffff && r.IntN(2) == 0:
			return enc16
		}
		return enc64
	}
	var m model
	open := false
	for range 1 + r.IntN(40) {
		b0 := byte(r.IntN(8)) << 4 // FIN and RSV bits at random
		var n int
		switch k := r.IntN(4); {
		case k == 0:
			b0 = fin | b0&0x70 | []byte{opClose, opPing, opPong}[r.IntN(3)]
			n = r.IntN(maxControlPayload + 1)
		case open:
			b0 |= opContinuation
			n = dataLen()
		default:
			b0 |= []byte{opText, opBinary}[r.IntN(2)]
			n = dataLen()
		}
		if b0&0x0f < opClose {
			open = b0&fin == 0
		}
		m.add(b0, n, client, enc(n))
	}
	return &m
}

// FuzzTracker feeds a random valid stream (from seed) in pieces chosen by
// splits and checks the tracker against the model at every step. Each split
// byte: low 6 bits+1 = piece size, bit 6 scales it by 1024 (bit 7 is
// ignored; the seed corpus has it set in places).
func FuzzTracker(f *testing.F) {
	f.Add(uint64(1), []byte{})
	f.Add(uint64(2), []byte{0})
	f.Add(uint64(3), []byte{0x05, 0x85, 0x41, 0xc1, 0x3f})
	f.Fuzz(func(t *testing.T, seed uint64, splits []byte) {
		r := rand.New(rand.NewPCG(seed, seed>>32))
		client := seed&1 == 1
		m := randomStream(r, client)
		tr := New(client, 0)
		if len(splits) == 0 {
			m.feed(t, &tr, 0, len(m.data), "whole")
			return
		}
		for pos, i := 0, 0; pos < len(m.data); i++ {
			b := splits[i%len(splits)]
			size := int(b&0x3f) + 1
			if b&0x40 != 0 {
				size <<= 10
			}
			size = min(size, len(m.data)-pos)
			m.feed(t, &tr, pos, pos+size, "feed")
			pos += size
		}
	})
}

// atMessageBoundary reports whether tr is at a frame boundary with no
// fragmented data message open.
func atMessageBoundary(tr *Tracker) bool { return tr.AtFrameBoundary() && !tr.inMessage }

// xorKey masks b as RFC 6455 5.3 says, independently of the package's code.
func xorKey(b []byte, key [4]byte) {
	for i := range b {
		b[i] ^= key[i%4]
	}
}

// TestCloseCode: the status of the first Close frame is read whatever the
// pieces it is fed in, masked or not; later Close frames do not change it.
func TestCloseCode(t *testing.T) {
	for _, masked := range []bool{false, true} {
		for _, tc := range []struct {
			name    string
			payload []byte
			want    uint16
		}{
			{"normal", []byte{0x03, 0xE8}, 1000},
			{"with reason", append([]byte{0x0F, 0xA0}, "bye now"...), 4000},
			{"empty", nil, 1005},
			{"one byte", []byte{0x03}, 0},
		} {
			pl := bytes.Clone(tc.payload)
			if masked {
				xorKey(pl, testKey)
			}
			second := AppendClose(nil, 1011, "", masked, testKey)
			data := cat(frame(fin|opText, 3, masked), frame(fin|opPing, 2, masked),
				header(fin|opClose, uint64(len(pl)), masked, encShort), pl, second)
			for cut1 := range len(data) + 1 {
				for cut2 := cut1; cut2 <= len(data); cut2++ {
					tr := New(masked, 0)
					for _, piece := range [][]byte{data[:cut1], data[cut1:cut2], data[cut2:]} {
						if n, err := tr.Feed(piece); n != len(piece) || err != nil {
							t.Fatalf("masked=%v %s: Feed = %d, %v", masked, tc.name, n, err)
						}
					}
					if got := tr.CloseCode(); got != tc.want {
						t.Fatalf("masked=%v %s, cut at %d and %d: CloseCode = %d, want %d", masked, tc.name, cut1, cut2, got, tc.want)
					}
				}
			}
		}
	}
	tr := New(false, 0)
	tr.Feed(frame(fin|opText, 3, false))
	if tr.CloseCode() != 0 {
		t.Errorf("CloseCode before any Close = %d, want 0", tr.CloseCode())
	}
}

func TestAppendClose(t *testing.T) {
	if got := AppendClose(nil, 1001, "", false, [4]byte{}); !bytes.Equal(got, []byte{0x88, 0x02, 0x03, 0xE9}) {
		t.Errorf("AppendClose(1001) = % x, want 88 02 03 e9", got)
	}
	reason := string(bytes.Repeat([]byte("r"), 123))
	for _, mask := range []bool{false, true} {
		dst := []byte("prefix")
		got := AppendClose(dst, 1009, reason, mask, testKey)
		want := cat([]byte("prefix"), header(fin|opClose, 125, mask, encShort), []byte{0x03, 0xF1}, []byte(reason))
		if mask {
			xorKey(want[len(want)-125:], testKey)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("mask=%v: AppendClose = % x, want % x", mask, got, want)
		}
		if mask && got[len(got)-1] == 'r' {
			t.Errorf("masked close carries the reason in clear")
		}
		tr := New(mask, 0) // a masked frame is what a client sends
		if n, err := tr.Feed(got[len("prefix"):]); err != nil || !atMessageBoundary(&tr) || !tr.CloseSeen() {
			t.Errorf("mask=%v: tracker on AppendClose output: %d, %v, boundary %v", mask, n, err, atMessageBoundary(&tr))
		}
	}
	for _, bad := range []func(){
		func() { AppendClose(nil, 1000, reason+"x", false, testKey) },
		func() { AppendClose(nil, 1005, "", false, testKey) },
		func() { AppendClose(nil, 1006, "", false, testKey) },
		func() { AppendClose(nil, 1015, "", true, testKey) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("AppendClose with a bad argument did not panic")
				}
			}()
			bad()
		}()
	}
}

func TestNoAllocs(t *testing.T) {
	var m model
	for i := range 50 {
		m.add(fin|opBinary, i*10, true, encShort)
		m.add(fin|opPing, 4, true, encShort)
	}
	bad := cat(m.data, frame(fin|0x3, 0, true))
	checks := map[string]func(){
		"Feed": func() {
			tr := New(true, 0)
			tr.Feed(m.data)
		},
		"Feed error": func() {
			tr := New(true, 0)
			tr.Feed(bad)
		},
		"Feed split header": func() {
			tr := New(true, 0)
			tr.Feed(m.data[:1])
			tr.Feed(m.data[1:])
		},
	}
	buf := make([]byte, 0, 256)
	checks["AppendClose"] = func() { buf = AppendClose(buf[:0], 1001, "going away", true, testKey) }
	for name, fn := range checks {
		if a := testing.AllocsPerRun(1000, fn); a != 0 {
			t.Errorf("%s: %v allocations per run, want 0", name, a)
		}
	}
}

func BenchmarkFeed(b *testing.B) {
	for _, bc := range []struct {
		name        string
		size, count int
	}{{"64B", 64, 1024}, {"1MiB", 1 << 20, 4}} {
		b.Run(bc.name, func(b *testing.B) {
			var m model
			for range bc.count {
				m.add(fin|opBinary, bc.size, true, encShort)
			}
			b.SetBytes(int64(len(m.data)))
			b.ReportAllocs()
			for b.Loop() {
				tr := New(true, 0)
				if _, err := tr.Feed(m.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
