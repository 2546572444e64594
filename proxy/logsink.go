package proxy

import (
	"bytes"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// logFlush is how long a line may wait before it is written: a write per
// request would be a system call per request (nginx's `access_log ...
// buffer= flush=` does the same).
const logFlush = 200 * time.Millisecond

// logFlushBytes wakes the writer before logFlush once this much waits.
const logFlushBytes = 64 << 10

// logQueueBytes bounds the lines waiting for the writer. A destination
// slower than the traffic (a slow disk, a pipe nobody reads) costs lines,
// which are counted, never a wait on the data path.
const logQueueBytes = 4 << 20

// logCloseWait bounds how long closing a log waits for its writer: a
// destination that takes no more bytes (a hung disk, a pipe nobody reads)
// must not keep the process from exiting.
const logCloseWait = 5 * time.Second

// logSink is one log: lines are queued by whoever logs them and written
// by a goroutine of its own, so logging never waits for the destination.
// A line that does not fit in the queue is dropped and counted.
//
// Before start and after stop no writer runs: lines are written at once,
// by the caller.
type logSink struct {
	// json: lines are built as JSON objects, else as text. A reload
	// changes it.
	json    atomic.Bool
	dropped atomic.Uint64
	// prompt wakes the writer at every line (the error log, which is
	// rare and read by people); else at logFlushBytes or every logFlush.
	prompt bool
	// max bounds pending; logQueueBytes but in tests.
	max int

	mu      sync.Mutex
	pending []byte // lines queued, not yet taken by the writer
	running bool
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	spare   []byte // the writer's last batch, reused; the writer's own

	// wmu is held while writing to out, and to change out: a reopen
	// or a switch happens between two writes, so every line goes whole
	// to the old destination or to the new one.
	wmu sync.Mutex
	out logOutput
}

// logOutput is a log's destination.
type logOutput struct {
	// path is the configured path ("stdout", "stderr" or a file), or ""
	// for a writer given in Options.
	path string
	w    io.Writer
	// file is w when the sink opened it: the sink closes it.
	file *os.File
}

func newLogSink(out logOutput, json, prompt bool) *logSink {
	s := &logSink{out: out, prompt: prompt, max: logQueueBytes}
	s.json.Store(json)
	return s
}

// openLogFile opens a log file for append, creating it.
func openLogFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

// write queues one line (or several, each ending in a newline). line is
// copied: the caller may reuse it.
func (s *logSink) write(line []byte) {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		s.writeOut(line)
		return
	}
	if len(s.pending)+len(line) > s.max {
		s.mu.Unlock()
		s.dropped.Add(1)
		return
	}
	s.pending = append(s.pending, line...)
	wake := s.prompt || len(s.pending) >= logFlushBytes
	s.mu.Unlock()
	if wake {
		select {
		case s.wake <- struct{}{}:
		default: // already woken
		}
	}
}

// writeOut writes b to the destination. Lines a failing destination did
// not take are counted as dropped.
func (s *logSink) writeOut(b []byte) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.writeLocked(b)
}

// writeLocked is writeOut with s.wmu held.
func (s *logSink) writeLocked(b []byte) {
	if s.out.w == nil {
		s.dropped.Add(uint64(bytes.Count(b, []byte{'\n'})))
		return
	}
	if n, err := s.out.w.Write(b); err != nil {
		s.dropped.Add(uint64(bytes.Count(b[n:], []byte{'\n'})))
	}
}

// start runs the writer until stop.
func (s *logSink) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return
	}
	s.running = true
	s.wake, s.stop, s.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go s.run(s.wake, s.stop, s.done)
}

func (s *logSink) run(wake, stop, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(logFlush)
	defer tick.Stop()
	for {
		select {
		case <-wake:
		case <-tick.C:
		case <-stop:
			s.writePending()
			return
		}
		s.writePending()
	}
}

// writePending writes the queued lines; only the writer calls it.
func (s *logSink) writePending() {
	s.mu.Lock()
	batch := s.pending
	s.pending = s.spare[:0]
	s.mu.Unlock()
	if len(batch) == 0 {
		s.spare = batch
		return
	}
	s.writeOut(batch)
	if cap(batch) > 4*logFlushBytes {
		batch = nil // a burst's buffer is not kept for good
	}
	s.spare = batch
}

// close writes what is queued, stops the writer and closes a file the
// sink opened. Lines logged later are written at once to stdout or
// stderr, and dropped when the destination was a file. A writer stuck
// for logCloseWait is left behind with its destination.
func (s *logSink) close() {
	s.mu.Lock()
	running := s.running
	s.running = false
	s.mu.Unlock()
	if running {
		close(s.stop)
		select {
		case <-s.done:
		case <-time.After(logCloseWait):
			return
		}
	}
	s.wmu.Lock()
	if s.out.file != nil {
		s.out.file.Close()
		s.out = logOutput{path: s.out.path}
	}
	s.wmu.Unlock()
}

// reopen opens the log file again under its path, for logrotate: lines
// queued until now are written to the file it had (renamed, usually), as
// nginx does on USR1; the next ones go to the new one. A destination that
// is not a file stays.
func (s *logSink) reopen() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.out.file == nil {
		return nil
	}
	f, err := openLogFile(s.out.path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	queued := s.pending
	s.pending = nil
	s.mu.Unlock()
	s.writeLocked(queued)
	s.out.file.Close()
	s.out.file, s.out.w = f, f
	return nil
}

// path is the configured destination.
func (s *logSink) path() string {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.out.path
}

// switchTo sends the next lines to out, and closes the file the sink had
// opened before.
func (s *logSink) switchTo(out logOutput) {
	s.wmu.Lock()
	old := s.out
	s.out = out
	s.wmu.Unlock()
	if old.file != nil {
		old.file.Close()
	}
}

// sinkWriter is a logSink as an io.Writer, for loggers that make one Write
// per line (log.Logger, slog's handlers).
type sinkWriter struct{ s *logSink }

func (w sinkWriter) Write(p []byte) (int, error) {
	w.s.write(p)
	return len(p), nil
}
