//go:build !linux

package testenv

import "os/exec"

// lockFile is a no-op here: concurrent builds then only waste time, since
// each writes a temporary file and renames it into place.
func lockFile(string) (func(), error) { return func() {}, nil }

func dieWithParent(*exec.Cmd) {}

func inOwnGroup(*exec.Cmd) {}

func killGroup(cmd *exec.Cmd) { _ = cmd.Process.Kill() }
