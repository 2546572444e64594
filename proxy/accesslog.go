package proxy

import (
	"bufio"
	"io"
	"strconv"
	"sync"
	"time"
)

// accessLogFlush is how long an access log line may wait in the buffer.
const accessLogFlush = 200 * time.Millisecond

// accessLog writes access log lines through a buffer flushed every 200 ms
// (and when full), like nginx's `access_log ... buffer= flush=`: one write
// per request would be a system call per request.
type accessLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

func newAccessLog(dst io.Writer) *accessLog {
	return &accessLog{w: bufio.NewWriterSize(dst, 64<<10)}
}

// start runs the periodic flush until close.
func (l *accessLog) start() {
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(l.done)
		tick := time.NewTicker(accessLogFlush)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				l.flush()
			case <-l.stop:
				l.flush()
				return
			}
		}
	}()
}

func (l *accessLog) close() {
	if l.stop != nil {
		close(l.stop)
		<-l.done
		l.stop = nil
	}
	l.flush()
}

func (l *accessLog) flush() {
	l.mu.Lock()
	l.w.Flush()
	l.mu.Unlock()
}

func (l *accessLog) write(line []byte) {
	l.mu.Lock()
	l.w.Write(line)
	l.mu.Unlock()
}

// logLine builds one access log line without fmt: "key=value" fields
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
