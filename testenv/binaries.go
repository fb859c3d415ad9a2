package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireBinary returns the path of the program name. When it is missing
// and the test runs as root, it installs debianPackage with apt-get;
// otherwise the test fails with the command that installs it.
func RequireBinary(t testing.TB, name, debianPackage string) string {
	t.Helper()
	return requireBinary(t, name, debianPackage, os.Geteuid() == 0, aptInstall)
}

// requireBinary is RequireBinary with the root check and the installer
// passed in, so the failure path can be tested without apt.
func requireBinary(t testing.TB, name, pkg string, root bool, install func(pkg string) error) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	hint := fmt.Sprintf("missing %s: install with: apt-get install -y %s", name, pkg)
	if !root {
		t.Fatalf("testenv: %s", hint)
	}
	if err := install(pkg); err != nil {
		t.Fatalf("testenv: %s (installing it failed: %v)", hint, err)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("testenv: %s (apt-get installed %s but %s is still not on PATH)", hint, pkg, name)
	}
	return p
}

var apt struct {
	sync.Mutex
	updated bool
}

// aptInstall installs pkg, running apt-get update first only when the
// install fails without it: a fresh machine may have no package lists,
// but updating on every call would be slow.
func aptInstall(pkg string) error {
	apt.Lock()
	defer apt.Unlock()
	err := runApt("install", "-y", pkg)
	if err == nil || apt.updated {
		return err
	}
	if uerr := runApt("update"); uerr != nil {
		return errors.Join(err, uerr)
	}
	apt.updated = true
	return runApt("install", "-y", pkg)
}

func runApt(args ...string) error {
	// Package tests run as parallel processes; wait for another one's
	// dpkg lock instead of failing at once.
	args = append([]string{"-o", "DPkg::Lock::Timeout=600"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, tail(out, 2000))
	}
	return nil
}

// moduleRoot finds the directory of go.mod by walking up from the working
// directory, which go test sets to the package under test.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if fileExists(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// goTool returns the go command. go test puts its own GOROOT/bin first on
// PATH, so the lookup finds the toolchain that runs the test.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if p := "/usr/local/go/bin/go"; fileExists(p) {
		return p, nil
	}
	return "", errors.New("missing go: the go toolchain must be on PATH")
}

// binCacheDir is where built test binaries are kept across test processes
// and runs.
func binCacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "airlock", "testbin")
	return dir, os.MkdirAll(dir, 0o755)
}

// goBuild builds pkg in the module root to a temporary name beside dst and
// renames it into place, so a concurrent reader never sees half a binary.
func goBuild(root, pkg, dst string) error {
	gobin, err := goTool()
	if err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.tmp-%d", dst, os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", tmp, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, tail(out, 4000))
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

var airlockBuild struct {
	once sync.Once
	path string
	err  error
}

// BuildAirlock builds ./cmd/airlock once per test process and returns the
// binary's path. The path is per checkout and replaced atomically, so
// parallel test processes of the same tree may share it.
func BuildAirlock(t testing.TB) string {
	t.Helper()
	b := &airlockBuild
	// No t.Fatalf inside Do: Goexit would mark the Once done with no result.
	b.once.Do(func() { b.path, b.err = buildAirlock() })
	if b.err != nil {
		t.Fatalf("testenv: build airlock: %v", b.err)
	}
	return b.path
}

func buildAirlock() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := binCacheDir()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(root))
	path := filepath.Join(dir, "airlock-"+hex.EncodeToString(sum[:6]))
	return path, goBuild(root, "./cmd/airlock", path)
}

// ModuleRoot is the directory of go.mod, the checkout under test.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return root
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// tail returns at most the last n bytes of b, for error messages that
// quote a log or a command's output.
func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = append([]byte("..."), b[len(b)-n:]...)
	}
	return string(b)
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return tail(b, n)
}
