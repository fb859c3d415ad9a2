package mysql

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/airlockhq/airlock/proxy"
)

// A session relays through 64 KiB buffers each way (large, for results
// streamed at full speed) but holds them only while it is busy: waiting
// for the client's next command it gives all four back (a client reader
// already holding a pipelined command aside) and waits for the command's
// first byte in a proxy.Primer. The idle watcher waits for the upstream
// the same way and takes a reader only if it speaks; the relay takes the
// rest when the command comes, the client writer when something is
// written to the client (by the relay, the watcher or the ender).
var (
	readers = proxy.NewReaderPool(64 << 10)
	writers = proxy.NewWriterPool(64 << 10)
)

// releaseBuffers gives back the buffers of a session about to wait for
// its client's next command: those that hold nothing. The relay goroutine
// calls it before setIdle, so no watcher runs yet.
func (s *session) releaseBuffers() {
	if s.cr.Buffered() == 0 {
		readers.Put(s.cr)
		s.cr = nil
	}
	if s.ur.Buffered() == 0 {
		readers.Put(s.ur)
		s.ur = nil
	}
	if s.uw.Buffered() == 0 {
		writers.Put(s.uw)
		s.uw = nil
	}
	s.cwMu.Lock()
	if s.cw != nil && s.cw.Buffered() == 0 {
		writers.Put(s.cw)
		s.cw = nil
	}
	s.cwMu.Unlock()
}

// takeBuffers takes the upstream's buffers back when a command comes
// (the watcher may have taken the reader already); the client reader is
// the primer's.
func (s *session) takeBuffers() {
	if s.ur == nil {
		s.ur = readers.Take(s.up)
	}
	if s.uw == nil {
		s.uw = writers.Take(s.up)
	}
}

// clientWriter is the client writer, taken from the pool when the session
// holds none. cwMu is held.
func (s *session) clientWriter() *bufio.Writer {
	if s.cw == nil {
		s.cw = writers.Take(s.cl)
	}
	return s.cw
}

// While the client is idle the relay blocks reading it, not the upstream;
// a server that closes its side then (wait_timeout, KILL, a restart; MySQL
// 8.0.24+ first sends ER_CLIENT_INTERACTION_TIMEOUT) would go unnoticed
// until the client's next command, and a driver's check of an idle
// connection would find it open. So once the client has been idle for
// idleWatchDelay, a watcher reads the upstream too. When the upstream
// speaks or closes while the client is still idle, the watcher relays an
// error packet it sent, closes the client's connection at once and ends
// the session with why. When the client sends a command first, the relay
// interrupts the watcher with a read deadline in the past before it
// touches the upstream. A busy session (a command within idleWatchDelay of
// the last answer) pays only a timer reset per command.

// idleWatchDelay is how long a client is idle before the upstream is
// watched.
const idleWatchDelay = 50 * time.Millisecond

// startIdleLocked arms the watcher; cwMu is held.
func (s *session) startIdleLocked() {
	if s.idleTimer == nil {
		s.idleTimer = time.AfterFunc(idleWatchDelay, s.watchUpstream)
		return
	}
	s.idleTimer.Reset(idleWatchDelay)
}

// endIdle marks the session busy: it stops the watcher, waiting for it to
// leave the upstream reader, and returns why the session must end if the
// watcher found the upstream gone.
func (s *session) endIdle() string {
	s.cwMu.Lock()
	s.idle = false
	if s.idleTimer != nil {
		s.idleTimer.Stop()
	}
	done := s.watchDone
	s.cwMu.Unlock()
	if done != nil {
		_ = s.up.SetReadDeadline(time.Now().Add(-time.Second))
		<-done
		_ = s.up.SetReadDeadline(time.Time{})
	}
	s.cwMu.Lock()
	defer s.cwMu.Unlock()
	return s.upGone
}

// watchUpstream runs once the client has been idle for idleWatchDelay: it
// waits for the upstream to speak or close.
func (s *session) watchUpstream() {
	s.cwMu.Lock()
	if !s.idle || s.watchDone != nil || s.closing.Load() {
		s.cwMu.Unlock()
		return
	}
	done := make(chan struct{})
	s.watchDone = done
	s.cwMu.Unlock()
	defer close(done)

	// The relay, idle, touches the upstream reader only after done. A
	// watch holds no buffer until the upstream speaks.
	var err error
	if s.ur != nil {
		_, err = s.ur.Peek(1)
	} else {
		var r *bufio.Reader
		if r, err = s.fromUpstream.Wait(readers); err == nil {
			s.ur = r
		}
	}

	s.cwMu.Lock()
	s.watchDone = nil
	// Still idle: the upstream spoke or closed on its own. Otherwise the
	// relay interrupted the watch for the client's command.
	claim := s.idle && !s.closing.Load() && !errors.Is(err, os.ErrDeadlineExceeded)
	if !claim {
		s.cwMu.Unlock()
		return
	}
	why := s.upstreamSpoke(err)
	s.upGone = why
	s.cwMu.Unlock()
	s.stop(why)
}

// upstreamSpoke handles what the upstream sent while the client was idle
// (err is the read's error): it relays an error packet to the client, as
// the server's goodbye, and says why the session ends. cwMu is held.
func (s *session) upstreamSpoke(err error) string {
	const idle = "upstream closed the connection while the session was idle (the server's wait_timeout, a KILL, or a restart)"
	if err != nil {
		return idle
	}
	_ = s.up.SetReadDeadline(time.Now().Add(time.Second))
	h, err := readHeader(s.ur)
	if err != nil {
		return idle
	}
	p, _, err := readPayload(s.ur, h, nil, maxControl, "upstream packet")
	if err != nil || len(p) == 0 || p[0] != hdrERR {
		return fmt.Sprintf("upstream sent an unexpected packet while the session was idle (%d bytes); closed", len(p))
	}
	// The server's own packet, as it sent it: the client reads it as the
	// answer to its next command, as it would directly.
	_ = s.cl.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := writePacket(s.clientWriter(), h.seq, p); err == nil {
		_ = s.cw.Flush()
	}
	e := parseErr(p)
	return fmt.Sprintf("upstream closed the connection while the session was idle: %d %s", e.code, e.msg)
}
