package proxy

import (
	"bufio"
	"io"
	"net"
	"sync"
)

// ReaderPool keeps bufio.Readers of one size for relays to take while a
// message is on its way and give back when it is read.
type ReaderPool struct {
	size int
	p    sync.Pool
}

// NewReaderPool is a pool of readers of size bytes.
func NewReaderPool(size int) *ReaderPool {
	rp := &ReaderPool{size: size}
	rp.p.New = func() any { return bufio.NewReaderSize(nil, size) }
	return rp
}

// Take is a reader from the pool, reading src.
func (rp *ReaderPool) Take(src io.Reader) *bufio.Reader {
	r := rp.p.Get().(*bufio.Reader)
	r.Reset(src)
	return r
}

// Put gives back r, which holds nothing; one of another size (one a
// connection phase made) is left to the collector.
func (rp *ReaderPool) Put(r *bufio.Reader) {
	if r.Size() == rp.size {
		r.Reset(nil)
		rp.p.Put(r)
	}
}

// WriterPool keeps bufio.Writers of one size.
type WriterPool struct {
	size int
	p    sync.Pool
}

// NewWriterPool is a pool of writers of size bytes.
func NewWriterPool(size int) *WriterPool {
	wp := &WriterPool{size: size}
	wp.p.New = func() any { return bufio.NewWriterSize(nil, size) }
	return wp
}

// Take is a writer from the pool, writing to dst.
func (wp *WriterPool) Take(dst io.Writer) *bufio.Writer {
	w := wp.p.Get().(*bufio.Writer)
	w.Reset(dst)
	return w
}

// Put gives back w, which is flushed; one of another size is left to the
// collector.
func (wp *WriterPool) Put(w *bufio.Writer) {
	if w.Size() == wp.size {
		w.Reset(nil)
		wp.p.Put(w)
	}
}

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

// Wait blocks until src has a byte and returns a reader from pool that
// reads it first, then src.
func (p *Primer) Wait(pool *ReaderPool) (*bufio.Reader, error) {
	for {
		n, err := p.src.Read(p.b[:])
		if n == 1 {
			p.has = true
			return pool.Take(p), nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// PrereadConn is a connection whose first bytes a bufio.Reader already
// read (a TLS ClientHello that came right behind the plaintext request to
// start TLS): it reads them from R, then from Conn itself. R is let go
// once drained, given back to Pool when Pool is not nil, not kept for the
// connection's life.
type PrereadConn struct {
	net.Conn
	R    *bufio.Reader
	Pool *ReaderPool
}

// Read implements net.Conn.
func (c *PrereadConn) Read(b []byte) (int, error) {
	if c.R != nil {
		if c.R.Buffered() > 0 {
			return c.R.Read(b)
		}
		if c.Pool != nil {
			c.Pool.Put(c.R)
		}
		c.R = nil
	}
	return c.Conn.Read(b)
}
