package mysql

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// idleSession is a session whose client and upstream are pipes: the test
// holds the far ends.
func idleSession(t *testing.T) (s *session, client, upstream net.Conn, stopped chan string) {
	t.Helper()
	cl, clFar := net.Pipe()
	up, upFar := net.Pipe()
	stopped = make(chan string, 1)
	s = &session{
		cl: cl, cr: bufio.NewReader(cl), cw: bufio.NewWriter(cl),
		up: up, ur: bufio.NewReader(up), uw: bufio.NewWriter(up),
	}
	s.stop = func(why string) {
		s.closing.Store(true)
		cl.Close()
		up.Close()
		stopped <- why
	}
	t.Cleanup(func() { cl.Close(); up.Close(); clFar.Close(); upFar.Close() })
	return s, clFar, upFar, stopped
}

func TestIdleWatchUpstreamCloses(t *testing.T) {
	s, client, upstream, stopped := idleSession(t)
	s.setIdle()
	time.Sleep(2 * idleWatchDelay)
	upstream.Close()
	select {
	case why := <-stopped:
		if !strings.Contains(why, "while the session was idle") {
			t.Errorf("ended with %q", why)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the session did not end when the upstream closed")
	}
	_ = client.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Error("the client's connection is still open")
	}
	if why := s.endIdle(); why == "" {
		t.Error("endIdle does not report the upstream gone")
	}
}

func TestIdleWatchRelaysServerError(t *testing.T) {
	s, client, upstream, stopped := idleSession(t)
	s.setIdle()
	time.Sleep(2 * idleWatchDelay)
	// MySQL 8.0.24+ says why before it closes.
	goodbye := packet(0, errPacket(4031, "HY000", "The client was disconnected by the server because of inactivity."))
	go func() { _, _ = upstream.Write(goodbye); upstream.Close() }()
	got := make([]byte, len(goodbye))
	_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := readFull(client, got); err != nil || string(got) != string(goodbye) {
		t.Fatalf("the client got %q, %v; want the server's packet", got, err)
	}
	if why := <-stopped; !strings.Contains(why, "4031 The client was disconnected") {
		t.Errorf("ended with %q", why)
	}
}

func TestIdleWatchInterruptedByCommand(t *testing.T) {
	s, _, upstream, stopped := idleSession(t)
	for range 3 {
		s.setIdle()
		time.Sleep(2 * idleWatchDelay) // the watcher is reading the upstream
		if why := s.endIdle(); why != "" {
			t.Fatalf("endIdle: %q", why)
		}
		// The relay owns the upstream again: a response reaches it.
		go func() { _, _ = upstream.Write([]byte("ok")) }()
		b := make([]byte, 2)
		_ = s.up.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := readFull(s.ur, b); err != nil || string(b) != "ok" {
			t.Fatalf("read after the watch: %q, %v", b, err)
		}
		_ = s.up.SetReadDeadline(time.Time{})
	}
	select {
	case why := <-stopped:
		t.Fatalf("the session ended: %s", why)
	default:
	}
	// A command within the delay never starts the watcher.
	s.setIdle()
	s.endIdle()
	time.Sleep(2 * idleWatchDelay)
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	if s.watchDone != nil {
		t.Error("a watcher started after the session went busy")
	}
}

func readFull(r interface{ Read([]byte) (int, error) }, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// BenchmarkIdleToggle is what every command pays for the idle watch.
func BenchmarkIdleToggle(b *testing.B) {
	s := &session{}
	b.ReportAllocs()
	for b.Loop() {
		s.setIdle()
		s.endIdle()
	}
}
