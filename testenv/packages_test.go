package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRequireFile(t *testing.T) {
	present := filepath.Join(t.TempDir(), "present.jar")
	if err := os.WriteFile(present, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if p := RequireFile(t, present, "airlock-pkg"); p != present {
		t.Errorf("RequireFile(present) = %q", p)
	}

	missing := filepath.Join(t.TempDir(), "missing.jar")
	noInstall := func(string) error { t.Error("installer called for a non-root user"); return nil }
	msg := runFatal(func(tb testing.TB) { requireFile(tb, missing, "airlock-pkg", false, noInstall) })
	if want := "missing " + missing + ": install with: apt-get install -y airlock-pkg"; !strings.Contains(msg, want) {
		t.Errorf("non-root failure message %q does not contain %q", msg, want)
	}

	var installed string
	failing := func(pkg string) error { installed = pkg; return errors.New("no such package") }
	msg = runFatal(func(tb testing.TB) { requireFile(tb, missing, "airlock-pkg", true, failing) })
	if installed != "airlock-pkg" || !strings.Contains(msg, "no such package") || !strings.Contains(msg, "apt-get install -y airlock-pkg") {
		t.Errorf("root install failure: installer got %q, message %q", installed, msg)
	}

	// An install that succeeds but does not bring the file is a failure
	// too, not a silent pass.
	msg = runFatal(func(tb testing.TB) { requireFile(tb, missing, "airlock-pkg", true, func(string) error { return nil }) })
	if !strings.Contains(msg, "is still missing") {
		t.Errorf("install without the file: message %q", msg)
	}
	// And one that brings it returns its path.
	var got string
	msg = runFatal(func(tb testing.TB) {
		got = requireFile(tb, missing, "airlock-pkg", true, func(string) error { return os.WriteFile(missing, nil, 0o644) })
	})
	if msg != "" || got != missing {
		t.Errorf("install that brings the file: %q, %q", got, msg)
	}
}
