package proxy

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

func TestStallConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	sc := &stallConn{Conn: a, timeout: 50 * time.Millisecond}
	c := &Conn{Conn: sc, stall: sc, srv: &Server{}}

	// Between messages a read waits as long as the client likes.
	got := make(chan error, 1)
	go func() {
		var p [1]byte
		_, err := sc.Read(p[:])
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("idle read returned early: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := b.Write([]byte{'Q'}); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("idle read: %v", err)
	}

	// Inside a message, the rest must come within the timeout.
	c.MessageStarted()
	var p [4]byte
	start := time.Now()
	_, err := sc.Read(p[:])
	if !errors.Is(err, os.ErrDeadlineExceeded) || !c.Stalled(err) {
		t.Fatalf("stalled read: err %v, Stalled %v", err, c.Stalled(err))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stall noticed after %v", d)
	}

	// Once the message is done, reads wait again, and a deadline someone
	// else sets is theirs (Stalled stays false for it).
	c.MessageDone()
	sc.fired.Store(false)
	go func() { time.Sleep(100 * time.Millisecond); b.Write([]byte("ok")) }()
	if _, err := sc.Read(p[:]); err != nil {
		t.Fatalf("read after the message: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := sc.Read(p[:]); !errors.Is(err, os.ErrDeadlineExceeded) || c.Stalled(err) {
		t.Fatalf("own deadline: err %v, Stalled %v", err, c.Stalled(err))
	}
}
