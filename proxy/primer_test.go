package proxy

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
)

func TestPrimerWait(t *testing.T) {
	pool := sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16) }}
	p := NewPrimer(strings.NewReader("hello, world"))
	r, err := p.Wait(&pool)
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
	if _, err := p.Wait(&pool); err != nil {
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
	if r, err := empty.Wait(&pool); r != nil || !errors.Is(err, io.EOF) {
		t.Fatalf("empty source: %v, %v; want no reader and EOF", r, err)
	}
}

func TestPutKeepsOnlyPoolSizes(t *testing.T) {
	made := 0
	pool := sync.Pool{New: func() any { made++; return bufio.NewReaderSize(nil, 32) }}
	PutReader(&pool, bufio.NewReaderSize(nil, 64), 32) // another size: dropped
	if r := pool.Get().(*bufio.Reader); r.Size() != 32 || made != 1 {
		t.Fatalf("pool gave a reader of %d bytes (%d made); want a new one of 32", r.Size(), made)
	}
	wpool := sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32) }}
	var sb strings.Builder
	w := TakeWriter(&wpool, &sb)
	_, _ = w.WriteString("to the builder")
	_ = w.Flush()
	PutWriter(&wpool, w, 32)
	if sb.String() != "to the builder" {
		t.Fatalf("wrote %q", sb.String())
	}
}
