package proxy

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
)

// TLSConn is the server side of a client's TLS connection that sends
// what one Write encrypts in one system call. crypto/tls writes each
// record (at most 16 KiB) to the connection as it seals it, so a relay
// flushing 64 KiB of rows made four write system calls, and the client
// read four smaller segments. BenchmarkTLSWrite measures both ends'
// CPU per MB (docs/architecture.md, "Bulk transfers").
//
// Only Writes of gatherMin bytes or more are gathered: a statement's
// answer, a login's messages, go straight to crypto/tls. The records of
// a gathered Write go to a buffer taken from a pool for the Write and
// given back after it, so an idle connection holds none, and only
// sessions moving bulk data use one.
type TLSConn struct {
	*tls.Conn
	raw *gatherConn
}

// ServerTLS is tls.Server over raw, gathering each Write's records.
func ServerTLS(raw net.Conn, cfg *tls.Config) *TLSConn {
	g := &gatherConn{Conn: raw}
	return &TLSConn{Conn: tls.Server(g, cfg), raw: g}
}

// Write encrypts p and sends its records together.
func (c *TLSConn) Write(p []byte) (int, error) {
	if len(p) < gatherMin {
		return c.Conn.Write(p)
	}
	// A handshake not done yet is done first, not gathered: it waits
	// for the client's answer to what it sends.
	if err := c.Conn.Handshake(); err != nil {
		return 0, err
	}
	c.raw.start()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.end(); err == nil && ferr != nil {
		err = ferr
	}
	return n, err
}

// Close closes the connection; during a gathered Write, gathering or
// sending, only the connection under the TLS layer, which ends the Write
// (as tls.Conn.Close does during its own Write) instead of sending
// close_notify behind a write that may be blocked.
func (c *TLSConn) Close() error {
	if c.raw.gathering.Load() > 0 {
		return c.raw.Conn.Close()
	}
	return c.Conn.Close()
}

// gatherMin is the smallest Write gathered: one full record. Smaller
// Writes are one record once a connection has sent its first 128 KiB
// (until then crypto/tls seals records from about 1,200 bytes up,
// growing by as much each record).
const gatherMin = 16 << 10

// gatherBuffer is the most a Write gathers before it sends: a relay's
// 64 KiB flush fits, sealed, also in the smaller records of a
// connection's start.
const gatherBuffer = 72 << 10

var gatherBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, gatherBuffer)
	return &b
}}

// gatherConn is the connection under a TLSConn: while a Write is
// gathering, its writes go to a buffer, sent when the last gathering
// Write ends or the buffer is full.
type gatherConn struct {
	net.Conn
	mu sync.Mutex
	// gathering counts the Writes gathering or sending what they
	// gathered. It changes under mu; Close reads it without, since a
	// blocked send holds mu.
	gathering atomic.Int32
	buf       *[]byte // while gathering and holding something
}

func (g *gatherConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gathering.Load() == 0 {
		return g.Conn.Write(p)
	}
	if g.buf != nil && len(*g.buf)+len(p) > gatherBuffer {
		if err := g.sendLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) > gatherBuffer {
		return g.Conn.Write(p)
	}
	if g.buf == nil {
		g.buf = gatherBuffers.Get().(*[]byte)
	}
	*g.buf = append(*g.buf, p...)
	return len(p), nil
}

// start begins a Write's gathering.
func (g *gatherConn) start() {
	g.mu.Lock()
	g.gathering.Add(1)
	g.mu.Unlock()
}

// end ends a Write's gathering; the last to end sends what was gathered,
// and counts as gathering until it is sent.
func (g *gatherConn) end() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	defer g.gathering.Add(-1)
	if g.gathering.Load() > 1 {
		return nil
	}
	return g.sendLocked()
}

// sendLocked writes what is gathered and gives the buffer back.
func (g *gatherConn) sendLocked() error {
	if g.buf == nil {
		return nil
	}
	b := g.buf
	g.buf = nil
	_, err := g.Conn.Write(*b)
	*b = (*b)[:0]
	gatherBuffers.Put(b)
	return err
}
