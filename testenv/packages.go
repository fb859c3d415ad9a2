package testenv

import (
	"fmt"
	"os"
	"testing"
)

// RequireFile is RequireBinary for what a package ships besides programs
// (a Java library, a Python module): it returns path when it exists;
// when it is missing and the test runs as root, it installs debianPackage
// with apt-get; otherwise the test fails with the command that installs it.
func RequireFile(t testing.TB, path, debianPackage string) string {
	t.Helper()
	return requireFile(t, path, debianPackage, os.Geteuid() == 0, aptInstall)
}

func requireFile(t testing.TB, path, pkg string, root bool, install func(pkg string) error) string {
	t.Helper()
	if fileExists(path) {
		return path
	}
	hint := fmt.Sprintf("missing %s: install with: apt-get install -y %s", path, pkg)
	if !root {
		t.Fatalf("testenv: %s", hint)
	}
	if err := install(pkg); err != nil {
		t.Fatalf("testenv: %s (installing it failed: %v)", hint, err)
	}
	if !fileExists(path) {
		t.Fatalf("testenv: %s (apt-get installed %s but %s is still missing)", hint, pkg, path)
	}
	return path
}
