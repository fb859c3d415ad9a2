package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

func TestPrimerWait(t *testing.T) {
	pool := NewReaderPool(16)
	p := NewPrimer(strings.NewReader("hello, world"))
	r, err := p.Wait(pool)
	if err != nil {
		t.Fatal(err)
	}
	// The byte Wait read comes first, then the rest, across the reader's
	// refills.
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "hello, world" {
		t.Fatalf("read %q, %v; want %q", got, err, "hello, world")
	}
	// A zero-length read while the byte waits does not lose it.
	p = NewPrimer(strings.NewReader("xy"))
	if _, err := p.Wait(pool); err != nil {
		t.Fatal(err)
	}
	if n, err := p.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	var b [2]byte
	if n, _ := io.ReadFull(&p, b[:]); n != 2 || string(b[:]) != "xy" {
		t.Fatalf("after an empty read: %q", b[:n])
	}
	// At the end of the source, Wait says why and takes no reader.
	empty := NewPrimer(strings.NewReader(""))
	if r, err := empty.Wait(pool); r != nil || !errors.Is(err, io.EOF) {
		t.Fatalf("empty source: %v, %v; want no reader and EOF", r, err)
	}
}

func TestPoolsKeepOnlyTheirSize(t *testing.T) {
	pool := NewReaderPool(32)
	pool.Put(bufio.NewReaderSize(nil, 64)) // another size: dropped
	if r := pool.Take(strings.NewReader("")); r.Size() != 32 {
		t.Fatalf("pool gave a reader of %d bytes; want 32", r.Size())
	}
	wpool := NewWriterPool(32)
	wpool.Put(bufio.NewWriterSize(nil, 64))
	var sb strings.Builder
	w := wpool.Take(&sb)
	if w.Size() != 32 {
		t.Fatalf("pool gave a writer of %d bytes; want 32", w.Size())
	}
	_, _ = w.WriteString("to the builder")
	_ = w.Flush()
	if sb.String() != "to the builder" {
		t.Fatalf("wrote %q", sb.String())
	}
}

// TestPrereadConn reads what the reader holds, then the connection, and
// lets the drained reader go.
func TestPrereadConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	pool := NewReaderPool(16)
	pre := bufio.NewReaderSize(strings.NewReader("early"), 16)
	if _, err := pre.Peek(5); err != nil {
		t.Fatal(err)
	}
	c := &PrereadConn{Conn: a, R: pre, Pool: pool}
	go func() { _, _ = b.Write([]byte(" and late")) }()
	got := make([]byte, 0, 16)
	buf := make([]byte, 16)
	for len(got) < len("early and late") {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "early and late" || c.R != nil {
		t.Fatalf("read %q (reader kept: %v); want %q and the reader let go", got, c.R != nil, "early and late")
	}
}
