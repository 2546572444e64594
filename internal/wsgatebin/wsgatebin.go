// Package wsgatebin builds the wsgate binary for the test packages that run
// it as a subprocess (tests/ and tests/e2e/).
package wsgatebin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Build compiles ./cmd/wsgate of the module that dir is in into a new
// temporary directory. It returns the module root, the binary's path and a
// function that removes the directory. With WSGATE_E2E_RACE set in the
// environment the binary is built with the race detector: a race makes it
// print a report and exit 66, which the tests' exit-code checks catch. It
// is off by default because it slows the build and the relay.
func Build(dir string) (root, binary string, cleanup func(), err error) {
	root, err = moduleRoot(dir)
	if err != nil {
		return "", "", nil, err
	}
	tmp, err := os.MkdirTemp("", "wsgate-bin-")
	if err != nil {
		return "", "", nil, err
	}
	cleanup = func() { os.RemoveAll(tmp) }
	binary = filepath.Join(tmp, "wsgate")

	// A cold build cache can take a while; a hung toolchain must not hang
	// the test run forever.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"build", "-o", binary}
	if os.Getenv("WSGATE_E2E_RACE") != "" {
		args = append(args, "-race")
	}
	build := exec.CommandContext(ctx, "go", append(args, "./cmd/wsgate")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		cleanup()
		return "", "", nil, fmt.Errorf("go build ./cmd/wsgate: %v\n%s", err, out)
	}
	return root, binary, cleanup, nil
}

// moduleRoot is the nearest directory at or above dir that holds go.mod.
func moduleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("no go.mod at or above " + dir)
		}
	}
}
