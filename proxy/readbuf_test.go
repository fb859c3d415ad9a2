package proxy

import (
	"bytes"
	"io"
	"math"
	"runtime"
	"testing"
)

// TestAppendRead: the bytes come back in order, whatever the size, and
// reading a large message allocates at most twice its size (append's own
// growth allocated five times). Bytes are counted rather than allocations,
// the least of three reads: the count is the whole process's, and what
// other goroutines allocate meanwhile is small beside megabytes but not
// beside a dozen allocations (seen: 15 on a loaded machine).
func TestAppendRead(t *testing.T) {
	for _, n := range []int{0, 1, 100, 64 << 10, 64<<10 + 1, 1 << 20, 3<<20 + 7, 16 << 20} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i * 7)
		}
		var got []byte
		allocated := uint64(math.MaxUint64)
		for range 3 {
			var before, after runtime.MemStats
			r := bytes.NewReader(src)
			runtime.ReadMemStats(&before)
			var err error
			got, err = AppendRead(r, nil, n, false)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			allocated = min(allocated, after.TotalAlloc-before.TotalAlloc)
		}
		if !bytes.Equal(got, src) || cap(got) != n && n > 0 {
			t.Fatalf("n=%d: got %d bytes, cap %d", n, len(got), cap(got))
		}
		if limit := uint64(2*n + 64<<10); allocated > limit {
			t.Errorf("n=%d: %d bytes allocated, more than %d", n, allocated, limit)
		}
	}
	// A short read says so, and keeps what came.
	got, err := AppendRead(bytes.NewReader([]byte("abc")), []byte("x"), 10, false)
	if err != io.ErrUnexpectedEOF || string(got) != "xabc" {
		t.Fatalf("short read: %q, %v", got, err)
	}
	// A packet that more follow leaves room for a short closing one: the
	// message is not copied to append it.
	buf, err := AppendRead(bytes.NewReader(make([]byte, 1<<20)), nil, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	first := &buf[0]
	buf, err = AppendRead(bytes.NewReader(make([]byte, 25)), buf, 25, false)
	if err != nil || len(buf) != 1<<20+25 || &buf[0] != first {
		t.Fatalf("1 MiB and 25 bytes: %d bytes, %v, copied: %v", len(buf), err, &buf[0] != first)
	}
	// Many packets: each appended read doubles the capacity rather than
	// copying the whole buffer again.
	buf = nil
	copies := 0
	for range 12 {
		before := cap(buf)
		buf, err = AppendRead(bytes.NewReader(make([]byte, 1<<20)), buf, 1<<20, true)
		if err != nil {
			t.Fatal(err)
		}
		if cap(buf) != before {
			copies++
		}
	}
	if len(buf) != 12<<20 || copies > 4 {
		t.Fatalf("12 packets of 1 MiB: %d bytes, %d reallocations", len(buf), copies)
	}
}

func BenchmarkAppendRead(b *testing.B) {
	src := make([]byte, 16<<20)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := AppendRead(bytes.NewReader(src), nil, len(src), false); err != nil {
			b.Fatal(err)
		}
	}
}
