package tests

import (
	"context"
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// makeBuild runs `make build` in the module root, writing the binary into
// a temp dir, with env added to the test's environment; it returns the
// binary's path. This is the command the Dockerfile runs, so what is
// checked of the result here is what the image ships.
func makeBuild(t *testing.T, env ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wsgate")
	// A cold cache rebuilds the standard library for CGO_ENABLED=0 and
	// -trimpath; on a loaded two-core machine that takes minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "build", "BIN="+bin)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	return bin
}

// versionOf runs bin -version and returns what follows "wsgate ".
func versionOf(t *testing.T, bin string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-version").Output()
	if err != nil {
		t.Fatalf("%s -version: %v", bin, err)
	}
	v, ok := strings.CutPrefix(strings.TrimSuffix(string(out), "\n"), "wsgate ")
	if !ok {
		t.Fatalf("-version printed %q; want \"wsgate VERSION\"", out)
	}
	return v
}

// TestMakeBuild checks the binary `make build` makes: stamped with the
// checkout's `git describe`, statically linked (the Dockerfile's final
// stage has no C library or dynamic loader), built with -trimpath.
func TestMakeBuild(t *testing.T) {
	t.Parallel()
	want := "dev"
	describe := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	describe.Dir = moduleRoot
	if out, err := describe.Output(); err == nil {
		want = strings.TrimSpace(string(out))
	} else {
		t.Logf("git describe: %v; expecting version \"dev\"", err)
	}
	bin := makeBuild(t)

	if got := versionOf(t, bin); got != want {
		t.Errorf("-version says %q; want git describe's %q", got, want)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: it is dynamically linked", p.Type)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("binary needs shared libraries %v (err %v)", libs, err)
	}

	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" {
		t.Errorf("built with CGO_ENABLED=%q; want 0", settings["CGO_ENABLED"])
	}
	if settings["-trimpath"] != "true" {
		t.Errorf("built without -trimpath (build settings %v)", info.Settings)
	}
}

// Outside a git checkout (a source tarball, a Docker build context without
// .git) make build still works and the version is "dev".
func TestMakeBuildOutsideGit(t *testing.T) {
	t.Parallel()
	// GIT_DIR at an empty directory makes every git command fail as it
	// would outside a checkout. -buildvcs=false because go build would
	// otherwise fail on the same broken repository while stamping VCS
	// information (the Makefile's -X is what carries the version).
	bin := makeBuild(t, "GIT_DIR="+t.TempDir(), "GOFLAGS=-buildvcs=false")
	if got := versionOf(t, bin); got != "dev" {
		t.Errorf("-version outside git says %q; want \"dev\"", got)
	}
}
