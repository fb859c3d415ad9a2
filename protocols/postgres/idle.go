package postgres

import (
	"bufio"
	"io"
	"net"
	"sync"
)

// What an idle session holds. A session waiting for its client's next
// message, or for its server's next answer, holds no buffer for that
// direction: its goroutine waits for the first byte in the session's
// one-byte primer, then takes a reader (and the writer toward the other
// side) from a pool, and gives them back once everything read is relayed
// and flushed. Thousands of idle agent sessions so cost their TLS state
// and goroutines, not 10 KiB of buffers each (docs/benchmarks.md, "idle
// session memory").
const (
	readerSize         = 2 << 10
	clientWriterSize   = 4 << 10
	upstreamWriterSize = 2 << 10
)

var (
	readers         = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readerSize) }}
	clientWriters   = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, clientWriterSize) }}
	upstreamWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, upstreamWriterSize) }}
)

// primer waits for the first byte of a message while no buffer is held,
// and gives it first to the reader taken for the message.
type primer struct {
	src io.Reader
	b   [1]byte
	has bool
}

// Read implements io.Reader: the primed byte, then what src reads.
func (p *primer) Read(q []byte) (int, error) {
	if !p.has {
		return p.src.Read(q)
	}
	if len(q) == 0 {
		return 0, nil
	}
	q[0], p.has = p.b[0], false
	return 1, nil
}

// wait blocks until src has a byte and returns a pooled reader that reads
// it first, then src.
func (p *primer) wait() (*bufio.Reader, error) {
	for {
		n, err := p.src.Read(p.b[:])
		if n == 1 {
			p.has = true
			r := readers.Get().(*bufio.Reader)
			r.Reset(p)
			return r, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// putReader gives back a reader that holds nothing; one of another size
// (a plaintext client's startup reader) is left to the collector.
func putReader(r *bufio.Reader) {
	if r.Size() == readerSize {
		r.Reset(nil)
		readers.Put(r)
	}
}

// upstreamWriter takes an upstream writer from the pool, writing to conn.
func upstreamWriter(conn net.Conn) *bufio.Writer {
	w := upstreamWriters.Get().(*bufio.Writer)
	w.Reset(conn)
	return w
}

// putUpstreamWriter gives back a flushed upstream writer.
func putUpstreamWriter(w *bufio.Writer) {
	w.Reset(nil)
	upstreamWriters.Put(w)
}

// clientWriter is the client writer, taken from the pool when the session
// holds none. s.cwMu is held.
func (s *session) clientWriter() *bufio.Writer {
	if s.cl.w == nil {
		w := clientWriters.Get().(*bufio.Writer)
		w.Reset(s.cl.conn)
		s.cl.w = w
	}
	return s.cl.w
}

// releaseClientWriter flushes the client writer and gives it back to the
// pool, unless it is the large one of a result still streaming (see
// growClientWriter). Only the upstream goroutine calls it; whoever writes
// next takes a writer again.
func (s *session) releaseClientWriter() error {
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	w := s.cl.w
	if w == nil {
		return nil
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if s.small == nil && w.Size() == clientWriterSize {
		w.Reset(nil)
		clientWriters.Put(w)
		s.cl.w = nil
	}
	return nil
}
