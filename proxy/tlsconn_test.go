package proxy

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tlsPair is a TLSConn (or, with plain, a tls.Server) over loopback TCP,
// its socket's write counter and the client's end.
func tlsPair(t testing.TB, plain bool) (net.Conn, *countingConn, *tls.Conn) {
	t.Helper()
	cfg, err := LoadTLS("", "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// The handshake happens when the first side reads or writes.
	cl := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
	raw := <-accepted
	if raw == nil {
		t.Fatal("accept failed")
	}
	counted := &countingConn{Conn: raw}
	var srv net.Conn
	if plain {
		srv = tls.Server(counted, cfg)
	} else {
		srv = ServerTLS(counted, cfg)
	}
	t.Cleanup(func() { srv.Close(); cl.Close() })
	return srv, counted, cl
}

// handshake does both sides' handshakes, as the listeners do before
// relaying.
func handshake(t testing.TB, srv net.Conn, cl *tls.Conn) {
	t.Helper()
	hs := make(chan error, 1)
	go func() { hs <- cl.Handshake() }()
	if err := srv.(interface{ Handshake() error }).Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
}

// readAll reads n bytes from c in the background; the channel gets them.
func readAll(c io.Reader, n int) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, n)
		k, _ := io.ReadFull(c, b)
		got <- b[:k]
	}()
	return got
}

func TestTLSConnSendsAWriteInOneSystemCall(t *testing.T) {
	srv, counted, cl := tlsPair(t, false)
	handshake(t, srv, cl)
	pattern := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		return b
	}
	for _, tc := range []struct {
		name     string
		n        int
		maxCalls int64
	}{
		{"a statement's answer", 100, 1},
		// The first 128 KiB a connection sends are in records that
		// start at about 1,200 bytes and grow: its first 64 KiB are
		// ten records (ten writes from crypto/tls alone).
		{"a relay's 64 KiB flush at the start", 64 << 10, 1},
		{"the next 64 KiB", 64 << 10, 1},
		{"a relay's 64 KiB flush (four records)", 64 << 10, 1},
		// More than the gather buffer: sent each time it fills (four
		// records).
		{"1 MiB in one Write (64 records)", 1 << 20, 16},
	} {
		want := pattern(tc.n)
		got := readAll(cl, tc.n)
		before := counted.writes.Load()
		if n, err := srv.Write(want); err != nil || n != tc.n {
			t.Fatalf("%s: Write = %d, %v", tc.name, n, err)
		}
		calls := counted.writes.Load() - before
		if b := <-got; !bytes.Equal(b, want) {
			t.Fatalf("%s: the client read %d bytes, not what was written", tc.name, len(b))
		}
		if calls < 1 || calls > tc.maxCalls {
			t.Errorf("%s: %d writes to the socket, want 1 to %d", tc.name, calls, tc.maxCalls)
		}
		if g := srv.(*TLSConn).raw; g.buf != nil || g.gathering.Load() != 0 {
			t.Errorf("%s: after the Write the connection still holds a gather buffer", tc.name)
		}
	}

	// The same 64 KiB through crypto/tls alone: one write per record.
	plain, counted, cl := tlsPair(t, true)
	handshake(t, plain, cl)
	got := readAll(cl, 64<<10)
	before := counted.writes.Load()
	if _, err := plain.Write(pattern(64 << 10)); err != nil {
		t.Fatal(err)
	}
	<-got
	if n := counted.writes.Load() - before; n < 4 {
		t.Errorf("crypto/tls alone wrote 64 KiB in %d socket writes; the comparison above assumes one per record", n)
	}
}

// A Write before the handshake does the handshake first, without
// gathering its messages (the client could not answer them).
func TestTLSConnHandshakesBeforeGathering(t *testing.T) {
	srv, _, cl := tlsPair(t, false)
	msg := bytes.Repeat([]byte("hello"), gatherMin/5+1) // gathered
	got := readAll(cl, len(msg))
	done := make(chan error, 1)
	go func() {
		_, err := srv.Write(msg)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Write before the handshake is still blocked after 10 s")
	}
	if b := <-got; !bytes.Equal(b, msg) {
		t.Fatalf("client read %d bytes, not the %d written", len(b), len(msg))
	}
}

// Close during a Write blocked on a client that does not read ends the
// Write at once, as crypto/tls's own Close does, not after close_notify's
// 5 s write deadline.
func TestTLSConnCloseEndsABlockedWrite(t *testing.T) {
	srv, _, cl := tlsPair(t, false)
	handshake(t, srv, cl)
	blocked := make(chan error, 1)
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := srv.Write(chunk); err != nil {
				blocked <- err
				return
			}
		}
	}()
	// Let the socket buffers fill: the client reads nothing.
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-blocked:
		t.Fatalf("the Write ended before Close: %v", err)
	default:
	}
	start := time.Now()
	srv.Close()
	select {
	case err := <-blocked:
		if err == nil {
			t.Fatal("the blocked Write ended without an error")
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("the blocked Write ended %v after Close", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocked Write did not end within 10 s of Close")
	}
}

// Writes from two goroutines each arrive whole and in one piece.
func TestTLSConnConcurrentWrites(t *testing.T) {
	srv, _, cl := tlsPair(t, false)
	const writers, each, size = 2, 50, gatherMin + 4000 // gathered
	got := readAll(cl, writers*each*size)
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte{byte('a' + w)}, size)
			for range each {
				if _, err := srv.Write(msg); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	b := <-got
	if len(b) != writers*each*size {
		t.Fatalf("read %d bytes, want %d", len(b), writers*each*size)
	}
	for i := 0; i < len(b); i += size {
		if c := bytes.Count(b[i:i+size], b[i:i+1]); c != size {
			t.Fatalf("the write at %d is not whole: %d of %d bytes are %q", i, c, size, b[i])
		}
	}
}

func TestTLSConnWriteAfterClose(t *testing.T) {
	srv, _, _ := tlsPair(t, false)
	srv.Close()
	if _, err := srv.Write([]byte("x")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}

// BenchmarkTLSWrite sends 64 KiB Writes, a relay's flushes of a large
// result, to a TLS client in the same process that reads and discards
// them, through a TLSConn and through crypto/tls alone. cpu-ms/MB is the
// process's CPU time (both ends, user and system) per MB sent.
func BenchmarkTLSWrite(b *testing.B) {
	for _, bc := range []struct {
		name  string
		plain bool
	}{{"gathered", false}, {"crypto-tls", true}} {
		b.Run(bc.name, func(b *testing.B) {
			srv, _, cl := tlsPair(b, bc.plain)
			handshake(b, srv, cl)
			buf := make([]byte, 64<<10)
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = io.CopyBuffer(io.Discard, struct{ io.Reader }{cl}, make([]byte, 64<<10))
			}()
			b.SetBytes(int64(len(buf)))
			cpu0 := processCPU()
			b.ResetTimer()
			for range b.N {
				if _, err := srv.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			srv.Close()
			<-done
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/1e6/(float64(b.N)*float64(len(buf))/1e6), "cpu-ms/MB")
		})
	}
}

// processCPU is the process's user and system time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
