package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// log checks access_log or error_log: a known format, and a path that is
// stdout, stderr or a file the gateway can open for append.
func (v *validator) log(p keyPath, l Log) {
	switch l.Format {
	case LogText, LogJSON:
	default:
		v.add(p.key("format"), "format %q is unknown (known: %s, %s)", l.Format, LogText, LogJSON)
	}
	if l.Path == LogStdout || l.Path == LogStderr {
		return
	}
	if msg := checkLogFile(l.Path); msg != "" {
		v.add(p.key("path"), "%s", msg)
	}
}

// checkLogFile says why path cannot be opened for append (created when
// missing), or returns "". It creates nothing: wsgate -check must leave
// no file behind.
func checkLogFile(path string) string {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return fmt.Sprintf("%q is a directory; name a file in it", path)
	case err == nil:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Sprintf("cannot be opened for writing: %v", err)
		}
		f.Close()
		return ""
	case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTDIR):
		return err.Error()
	}
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("directory %q does not exist", dir)
	case err != nil:
		return err.Error()
	case !di.IsDir():
		return fmt.Sprintf("%q is not a directory", dir)
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return fmt.Sprintf("directory %q is not writable: the file cannot be created in it", dir)
	}
	return ""
}
