//go:build unix

package main

import (
	"strings"
	"testing"
)

func TestLockInstance(t *testing.T) {
	dir := t.TempDir()
	prev, release, err := lockInstance(dir, "gi_first")
	if err != nil || prev != "" {
		t.Fatalf("first: %q %v", prev, err)
	}
	// A second gateway on the same data directory is refused.
	if _, _, err := lockInstance(dir, "gi_second"); err == nil || !strings.Contains(err.Error(), "in use by another running gateway") {
		t.Fatalf("second while the first runs: %v", err)
	}
	release()
	// The next one learns which instance ran before it.
	prev, release, err = lockInstance(dir, "gi_third")
	if err != nil || prev != "gi_first" {
		t.Fatalf("after the first stopped: %q %v", prev, err)
	}
	release()
	if prev, release, err = lockInstance(dir, "gi_fourth"); err != nil || prev != "gi_third" {
		t.Fatalf("again: %q %v", prev, err)
	}
	release()
}
