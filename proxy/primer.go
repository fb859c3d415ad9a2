package proxy

import (
	"bufio"
	"io"
	"sync"
)

// Primer lets a relay wait for a connection's next message without
// holding a buffer: it reads the first byte alone, then hands out a
// reader from a pool that reads that byte first and the connection after
// it. Listeners whose sessions mostly wait (agents think between
// statements) so keep their buffers only while a message is on its way.
type Primer struct {
	src io.Reader
	b   [1]byte
	has bool
}

// NewPrimer is a primer for src, a connection (or its TLS layer).
func NewPrimer(src io.Reader) Primer { return Primer{src: src} }

// Read implements io.Reader: the primed byte, then what src reads.
func (p *Primer) Read(q []byte) (int, error) {
	if !p.has {
		return p.src.Read(q)
	}
	if len(q) == 0 {
		return 0, nil
	}
	q[0], p.has = p.b[0], false
	return 1, nil
}

// Wait blocks until src has a byte and returns a reader from pool (of
// *bufio.Reader) that reads it first, then src.
func (p *Primer) Wait(pool *sync.Pool) (*bufio.Reader, error) {
	for {
		n, err := p.src.Read(p.b[:])
		if n == 1 {
			p.has = true
			r := pool.Get().(*bufio.Reader)
			r.Reset(p)
			return r, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// PutReader gives r back to pool once it holds nothing; a reader of
// another size than size (one a connection phase made) is left to the
// collector.
func PutReader(pool *sync.Pool, r *bufio.Reader, size int) {
	if r.Size() == size {
		r.Reset(nil)
		pool.Put(r)
	}
}

// PutWriter gives w back to pool once it is flushed; one of another size
// than size is left to the collector.
func PutWriter(pool *sync.Pool, w *bufio.Writer, size int) {
	if w.Size() == size {
		w.Reset(nil)
		pool.Put(w)
	}
}

// TakeWriter is a writer from pool (of *bufio.Writer) writing to dst.
func TakeWriter(pool *sync.Pool, dst io.Writer) *bufio.Writer {
	w := pool.Get().(*bufio.Writer)
	w.Reset(dst)
	return w
}

// TakeReader is a reader from pool (of *bufio.Reader) reading src.
func TakeReader(pool *sync.Pool, src io.Reader) *bufio.Reader {
	r := pool.Get().(*bufio.Reader)
	r.Reset(src)
	return r
}
