// Package testenv starts throwaway real servers for tests: PostgreSQL and
// NATS with JetStream as separate processes on free loopback ports, in
// temporary directories, stopped and removed by t.Cleanup.
//
// Missing programs are installed with apt-get when the test runs as root
// (as CI does on a fresh Debian machine); otherwise the test fails with the
// exact install command. Nothing is skipped silently.
package testenv

import (
	_ "embed"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SampleSchema creates and fills the sample shop tables customers and
// orders; see sample_schema.sql for the exact numbers tests can rely on.
// scripts/demo.sh loads the same file.
//
//go:embed sample_schema.sql
var SampleSchema string

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the caller binds it, so the Start
// functions retry with a new port when the server reports it in use.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		// The kernel may hand a port just closed out again at once: two
		// listeners of one gateway got the same one. A port is handed out
		// once per test process.
		portsMu.Lock()
		seen := handedOut[port]
		handedOut[port] = true
		portsMu.Unlock()
		if !seen {
			return port
		}
	}
	t.Fatal("testenv: free port: every port offered was handed out before")
	return 0
}

var (
	portsMu   sync.Mutex
	handedOut = map[int]bool{}
)

// terminate stops a server process: SIGTERM, then SIGKILL if it has not
// exited (exited is closed by whoever waits for it) within grace. It
// reports whether the kill was needed.
func terminate(cmd *exec.Cmd, exited <-chan struct{}, grace time.Duration) (killed bool) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return false
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-exited
		return true
	}
}

// waitReady polls ready every 50ms until it succeeds, the server process
// exits (exited is closed), or timeout passes; the error names what, and
// the last reason ready gave.
func waitReady(what string, exited <-chan struct{}, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		select {
		case <-exited:
			return fmt.Errorf("%s exited during start", what)
		default:
		}
		if last = ready(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %v", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
