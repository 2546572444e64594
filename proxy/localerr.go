package proxy

import (
	"errors"
	"syscall"
)

// isLocalResourceError reports whether err is the gateway itself running
// short of descriptors (its own limit or the system's) or of kernel
// memory. Such a failure says nothing about the peer, and passes once
// connections end.
func isLocalResourceError(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM:
		return true
	}
	return false
}
