package testenv

import (
	"os"
	"os/exec"
	"syscall"
)

// lockFile takes an exclusive lock on path, waiting for another process
// that holds it. Test binaries of several packages run at once; the lock
// lets one build nats-server while the others wait for the result.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}

// dieWithParent makes the kernel kill the child if the test process dies
// without running its cleanups (a crash, a timeout panic, kill -9), so no
// server outlives it holding a port.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// inOwnGroup is dieWithParent for a server started through a wrapper
// (runuser, sh) that does not pass its own death on: the child also leads
// a process group of its own, which killGroup ends whole.
func inOwnGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// killGroup kills the process group inOwnGroup made: the wrapper and the
// server it started, which killing the wrapper alone would leave running.
func killGroup(cmd *exec.Cmd) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
