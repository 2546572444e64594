package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"time"
)

// watchInterval is how often -watch reads the configuration file.
const watchInterval = 2 * time.Second

// watchFile calls changed whenever the content of the file at path differs
// from the last content read (at first, from the digest last, taken before
// the file was loaded, so that a change made while the gateway started is
// not missed), until ctx ends. It compares content, not
// modification times: a Kubernetes ConfigMap update swaps a symlink, which
// keeps the path's times, and an editor may rewrite a file with the same
// bytes. A file that cannot be read is not a change (it is read again at
// the next tick); the reload it would cause would fail anyway.
func watchFile(ctx context.Context, path string, last []byte, every time.Duration, changed func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d := digest(path)
		if d == nil || bytes.Equal(d, last) {
			continue
		}
		last = d
		changed()
	}
}

// digest is the SHA-256 of the file's content, or nil when it cannot be
// read.
func digest(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(data)
	return sum[:]
}
