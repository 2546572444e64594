package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/wsgate/wsgate/config"
)

// logTargets are the writers Options gave: stdout and stderr stand for
// the paths "stdout" and "stderr"; access and errors, when set, take the
// place of the configured paths.
type logTargets struct {
	access, errors io.Writer
	stdout, stderr io.Writer
}

// openLogs opens the destinations of cfg's logs and makes the sinks.
func (g *Gateway) openLogs(cfg *config.Config) error {
	access, err := g.logTargets.output(cfg.AccessLog.Path, config.LogStdout, g.logTargets.access)
	if err != nil {
		return cfg.ErrorAt(err.Error(), "access_log", "path")
	}
	errs, err := g.logTargets.output(cfg.ErrorLog.Path, config.LogStderr, g.logTargets.errors)
	if err != nil {
		if access.file != nil {
			access.file.Close()
		}
		return cfg.ErrorAt(err.Error(), "error_log", "path")
	}
	g.accessLog = newLogSink(access, cfg.AccessLog.Format == config.LogJSON, false)
	g.errorLog = newLogSink(errs, cfg.ErrorLog.Format == config.LogJSON, true)
	g.errorJSON = slog.New(slog.NewJSONHandler(sinkWriter{g.errorLog}, nil))
	g.errorWriter = errorLogWriter{g}
	return nil
}

// output opens the destination of a log configured with path (def when
// empty, in a Config built in Go without defaults); override, when set,
// is used instead.
func (t logTargets) output(path, def string, override io.Writer) (logOutput, error) {
	if path == "" {
		path = def
	}
	switch {
	case override != nil:
		return logOutput{w: override}, nil
	case path == config.LogStdout:
		return logOutput{path: path, w: t.stdout}, nil
	case path == config.LogStderr:
		return logOutput{path: path, w: t.stderr}, nil
	}
	f, err := openLogFile(path)
	if err != nil {
		return logOutput{}, err
	}
	return logOutput{path: path, w: f, file: f}, nil
}

// switchLogs puts cfg's log formats and destinations in service, at a
// reload. A file that cannot be opened (validation checked it could)
// leaves that log where it was.
func (g *Gateway) switchLogs(cfg *config.Config) {
	for _, l := range []struct {
		sink     *logSink
		conf     config.Log
		def, key string
		override io.Writer
	}{
		{g.accessLog, cfg.AccessLog, config.LogStdout, "access_log", g.logTargets.access},
		{g.errorLog, cfg.ErrorLog, config.LogStderr, "error_log", g.logTargets.errors},
	} {
		l.sink.json.Store(l.conf.Format == config.LogJSON)
		if l.override != nil || l.sink.path() == l.conf.Path {
			continue
		}
		out, err := g.logTargets.output(l.conf.Path, l.def, nil)
		if err != nil {
			g.errorf("reload: %s: %v; its lines still go to %s", l.key, err, l.sink.path())
			continue
		}
		l.sink.switchTo(out)
	}
}

// ReopenLogs opens the access and error log files again under their
// configured paths: after logrotate renamed them (SIGUSR1 in its
// postrotate), the next lines go to new files. Each line goes whole to
// the old file or the new one; none is lost. Logs on stdout or stderr
// are left alone. A file that cannot be opened keeps its log on the old
// one, and the error says why.
func (g *Gateway) ReopenLogs() error {
	err := errors.Join(
		wrapLogErr("access_log", g.accessLog.reopen()),
		wrapLogErr("error_log", g.errorLog.reopen()))
	if err != nil {
		g.errorf("reopening logs: %v", err)
		return err
	}
	g.infof("log files reopened")
	return nil
}

func wrapLogErr(key string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w; its lines still go to the file open before", key, err)
}

// LogLinesDropped counts the log lines dropped since the gateway was made:
// lines that found the queue of their log full (its destination was
// slower than the traffic) or that the destination refused.
func (g *Gateway) LogLinesDropped() uint64 {
	return g.accessLog.dropped.Load() + g.errorLog.dropped.Load()
}

// closeLogs writes the lines queued and closes the log files.
func (g *Gateway) closeLogs() {
	g.accessLog.close()
	g.errorLog.close()
}

func (g *Gateway) errorf(format string, args ...any) {
	g.logAt(slog.LevelError, fmt.Sprintf(format, args...))
}

func (g *Gateway) warnf(format string, args ...any) {
	g.logAt(slog.LevelWarn, fmt.Sprintf(format, args...))
}

func (g *Gateway) infof(format string, args ...any) {
	g.logAt(slog.LevelInfo, fmt.Sprintf(format, args...))
}

// logAt writes one error log line: "wsgate: DATE TIME msg" in text (as
// log.Logger with log.LstdFlags writes it, which the text form was
// before), or a JSON object with time, level and msg.
func (g *Gateway) logAt(level slog.Level, msg string) {
	if level >= slog.LevelWarn {
		g.recentErrors.add(Event{Time: time.Now(), Text: msg}) // for the status page
	}
	if g.errorLog.json.Load() {
		g.errorJSON.Log(context.Background(), level, msg)
		return
	}
	b := make([]byte, 0, len(msg)+29)
	b = append(b, "wsgate: "...)
	b = time.Now().AppendFormat(b, "2006/01/02 15:04:05 ")
	b = append(b, msg...)
	if !strings.HasSuffix(msg, "\n") {
		b = append(b, '\n')
	}
	g.errorLog.write(b)
}

// errorLogWriter is the error log for parts that write their own text
// lines through a log.Logger ("wsgate: [part: ]DATE TIME msg"): the ACME
// client and the admin listener. In JSON they become a record at level
// ERROR whose msg is the line without the prefix and the date.
type errorLogWriter struct{ g *Gateway }

var stdLogPrefix = regexp.MustCompile(`^wsgate: ((?:[a-z]+: )*)\d{4}/\d\d/\d\d \d\d:\d\d:\d\d `)

func (w errorLogWriter) Write(p []byte) (int, error) {
	if !w.g.errorLog.json.Load() {
		w.g.errorLog.write(p)
		return len(p), nil
	}
	msg := strings.TrimSuffix(string(p), "\n")
	if m := stdLogPrefix.FindStringSubmatchIndex(msg); m != nil {
		msg = msg[m[2]:m[3]] + msg[m[1]:]
	} else {
		msg = strings.TrimPrefix(msg, "wsgate: ")
	}
	w.g.errorJSON.Error(msg)
	return len(p), nil
}

// routeName is the route's label in logs and metrics (host and path
// prefix), or "" when no route matched; it is made once, with the route's
// metrics.
func routeName(rt *Route) string {
	if rt == nil {
		return ""
	}
	return rt.metrics.name
}

// stdStreams are the process's stdout and stderr, the defaults of
// Options.Stdout and Options.Stderr.
func stdStreams(stdout, stderr io.Writer) (io.Writer, io.Writer) {
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	return stdout, stderr
}
