package postgres

import (
	"bufio"

	"github.com/airlockhq/airlock/proxy"
)

// What an idle session holds. A session waiting for its client's next
// message, or for its server's next answer, holds no buffer for that
// direction: its goroutine waits for the first byte in a proxy.Primer,
// then takes a reader (and the writer toward the other side) from a pool,
// and gives them back once everything read is relayed and flushed.
// Thousands of idle agent sessions so cost their TLS state and
// goroutines, not 10 KiB of buffers each (docs/architecture.md, "Memory
// and garbage collection").
var (
	// readers, each way; clientWriters and upstreamWriters.
	readers         = proxy.NewReaderPool(2 << 10)
	clientWriters   = proxy.NewWriterPool(4 << 10)
	upstreamWriters = proxy.NewWriterPool(2 << 10)
)

// clientWriter is the client writer, taken from the pool when the session
// holds none. s.cwMu is held.
func (s *session) clientWriter() *bufio.Writer {
	if s.cl.w == nil {
		s.cl.w = clientWriters.Take(s.cl.conn)
	}
	return s.cl.w
}

// releaseClientWriter flushes the client writer and gives it back to the
// pool: the large one of a result that has ended first (see
// growClientWriter), then the small one; the large one of a result still
// streaming stays. Only the upstream goroutine calls it; whoever writes
// next takes a writer again.
func (s *session) releaseClientWriter() error {
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	if s.cl.w == nil {
		return nil
	}
	if err := s.cl.w.Flush(); err != nil {
		return err
	}
	if s.small != nil && s.streamed == 0 {
		s.shrinkClientWriterLocked()
	}
	if s.small == nil {
		clientWriters.Put(s.cl.w)
		s.cl.w = nil
	}
	return nil
}
