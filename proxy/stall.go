package proxy

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// Stalled messages. A session may sit idle between messages as long as
// it likes: that is a client thinking. But a message that has begun to
// arrive and then stops (a MySQL packet header announcing 16 MB, then
// nothing) holds the session, its upstream connection and whatever the
// half-read message pins, for no reason a well-behaved client has. So once
// a listener has seen the first byte of a client message, every further
// read of it must make progress within limits.message_timeout.

// stallConn is the client connection as listeners read it after login.
// Reads get a deadline only while a message is in progress (mid), so the
// common case, a whole message already buffered, costs one atomic load.
type stallConn struct {
	net.Conn
	timeout time.Duration
	mid     atomic.Bool
	// armed is set while a read deadline of ours is on the connection.
	armed atomic.Bool
	// fired is set when a read failed on our deadline.
	fired atomic.Bool
}

func (c *stallConn) Read(p []byte) (int, error) {
	switch {
	case c.mid.Load():
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
		c.armed.Store(true)
	case c.armed.Load():
		_ = c.Conn.SetReadDeadline(time.Time{})
		c.armed.Store(false)
	}
	n, err := c.Conn.Read(p)
	if err != nil && c.armed.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
		c.fired.Store(true)
	}
	return n, err
}

// SetReadDeadline and SetDeadline replace our deadline, so the login
// timeout and the listeners' own deadlines keep working.
func (c *stallConn) SetReadDeadline(t time.Time) error {
	c.armed.Store(false)
	return c.Conn.SetReadDeadline(t)
}

func (c *stallConn) SetDeadline(t time.Time) error {
	c.armed.Store(false)
	return c.Conn.SetDeadline(t)
}

// MessageStarted says a client message has begun to arrive: until
// MessageDone, each read of its remaining bytes must make progress
// within limits.message_timeout. Call both from the goroutine that reads
// the client, after login.
func (c *Conn) MessageStarted() {
	if c.stall != nil {
		c.stall.mid.Store(true)
	}
}

// MessageDone says the message begun with MessageStarted has been read.
func (c *Conn) MessageDone() {
	if c.stall != nil {
		c.stall.mid.Store(false)
	}
}

// Stalled reports whether err ended a read because a message stopped
// arriving midway (limits.message_timeout).
func (c *Conn) Stalled(err error) bool {
	return c.stall != nil && err != nil && c.stall.fired.Load() && errors.Is(err, os.ErrDeadlineExceeded)
}

// StalledReason is what a session ended by Stalled is recorded with.
func (c *Conn) StalledReason() string {
	return "client stopped sending in the middle of a message: nothing for " + c.MessageTimeout().String() + " (limits.message_timeout)"
}

// MessageTimeout is limits.message_timeout.
func (c *Conn) MessageTimeout() time.Duration {
	if d := c.srv.Config.Limits.MessageTimeout; d > 0 {
		return d
	}
	return 30 * time.Second
}

// LoginTimeout is limits.login_timeout: how long a client has from
// connecting to holding a session.
func (c *Conn) LoginTimeout() time.Duration {
	if d := c.srv.Config.Limits.LoginTimeout; d > 0 {
		return d
	}
	return 60 * time.Second
}
