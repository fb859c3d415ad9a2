package proxy

import (
	"bytes"
	"io"
	"testing"
)

// TestAppendRead: the bytes come back in order, whatever the size, and
// reading a large message allocates at most twice its size (append's own
// growth allocated five times).
func TestAppendRead(t *testing.T) {
	for _, n := range []int{0, 1, 100, 64 << 10, 64<<10 + 1, 1 << 20, 3<<20 + 7, 16 << 20} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i * 7)
		}
		var got []byte
		allocs := testing.AllocsPerRun(1, func() {
			var err error
			got, err = AppendRead(bytes.NewReader(src), nil, n, false)
			if err != nil {
				t.Fatal(err)
			}
		})
		if !bytes.Equal(got, src) || cap(got) != n && n > 0 {
			t.Fatalf("n=%d: got %d bytes, cap %d", n, len(got), cap(got))
		}
		if allocs > 12 {
			t.Errorf("n=%d: %v allocations", n, allocs)
		}
	}
	// A short read says so, and keeps what came.
	got, err := AppendRead(bytes.NewReader([]byte("abc")), []byte("x"), 10, false)
	if err != io.ErrUnexpectedEOF || string(got) != "xabc" {
		t.Fatalf("short read: %q, %v", got, err)
	}
	// Many packets: each appended read doubles the capacity rather than
	// copying the whole buffer again.
	var buf []byte
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
