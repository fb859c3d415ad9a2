package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestCopier(t *testing.T) {
	var c Copier
	src := bufio.NewReaderSize(strings.NewReader(strings.Repeat("a", 5000)+"bc"), 16)
	var out bytes.Buffer
	w := bufio.NewWriterSize(&out, 16)
	if err := c.Copy(w, src, 5000); err != nil {
		t.Fatal(err)
	}
	if err := c.Copy(w, src, 1); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if out.String() != strings.Repeat("a", 5000)+"b" {
		t.Fatalf("copied %d bytes, ending %q", out.Len(), out.String()[max(0, out.Len()-3):])
	}
	if rest, _ := io.ReadAll(src); string(rest) != "c" {
		t.Fatalf("left %q in the reader, want %q", rest, "c")
	}
	if err := c.Copy(w, bufio.NewReader(strings.NewReader("xy")), 3); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short source: %v, want io.ErrUnexpectedEOF", err)
	}
	sr := strings.NewReader("")
	br := bufio.NewReaderSize(sr, 16)
	if n := testing.AllocsPerRun(100, func() {
		sr.Reset("0123456789")
		br.Reset(sr)
		_ = c.Copy(w, br, 10)
	}); n != 0 {
		t.Fatalf("%v allocations per copy", n)
	}
}
