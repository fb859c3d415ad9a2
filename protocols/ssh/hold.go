package ssh

import (
	"bytes"
	"context"
	"io"
	"sync"
)

// A channel's exec, shell or subsystem may wait for an approver (a hold,
// proxy/hold.go) for as long as the grant's hold timeout. The agent gives
// up on it as on a running command: by closing the channel or the
// connection (ssh without a terminal ends at Ctrl-C), by a signal request,
// or, with a pty, by typing Ctrl-C, which reaches the gateway as a 0x03
// byte of input. Each ends that channel's wait as cancelled.

// admitStart runs admit, which decides and starts the channel's exec,
// shell or subsystem and may wait for an approver, while it reads the
// agent's requests on the channel and, with a pty, its input: gaveUp ends
// when the agent gives up (see above). Other requests, and the signal
// itself, are handled after admit returns, in the order they came, so
// their replies keep the order of the requests.
func (s *sessionChan) admitStart(admit func(gaveUp context.Context)) {
	// The wait's own context: it ends only when the agent gives up; the
	// session's end already ends a wait (proxy.Session).
	gaveUp, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	if s.pty != nil && !s.sftp && !s.c.sess.Grant().Holds.IsZero() {
		s.heldIn = newHeldInput(s, cancel)
		defer func() {
			if !s.running.Load() {
				// Nothing runs to read the input: stop reading it.
				s.heldIn.close()
				s.heldIn = nil
				return
			}
			s.heldIn.stopWatching()
		}()
	}
	go func() {
		defer close(done)
		admit(gaveUp)
	}()
	for {
		select {
		case <-done:
			return
		case req, ok := <-s.reqs:
			if !ok {
				s.reqs = nil
				cancel()
				<-done
				return
			}
			if req.Type == "signal" {
				cancel()
			}
			s.queued = append(s.queued, req)
		}
	}
}

// heldInput reads the agent's input on a channel with a pty from the
// time its command starts to wait for an approver, watching for Ctrl-C
// (0x03), and keeps it for the command: once the command runs, copyStdin
// reads the agent's input through it. It stops reading the channel when
// it holds maxHeldInput bytes no one has read, until they are read.
type heldInput struct {
	mu        sync.Mutex
	cond      *sync.Cond
	buf       []byte
	err       error
	interrupt func() // nil once the wait is over
}

// maxHeldInput bounds what a waiting command's input may pile up.
const maxHeldInput = 64 << 10

func newHeldInput(s *sessionChan, interrupt func()) *heldInput {
	h := &heldInput{interrupt: interrupt}
	h.cond = sync.NewCond(&h.mu)
	go h.readAgent(s)
	return h
}

// readAgent reads the agent's channel until it ends (at the agent's EOF,
// or when the channel closes: a refused or cancelled command closes it).
func (h *heldInput) readAgent(s *sessionChan) {
	b := make([]byte, 32<<10)
	for {
		n, err := s.ch.Read(b)
		h.mu.Lock()
		if n > 0 && h.interrupt != nil && bytes.IndexByte(b[:n], 0x03) >= 0 {
			h.interrupt()
		}
		h.buf = append(h.buf, b[:n]...)
		if err != nil {
			h.err = err
		}
		h.cond.Broadcast()
		for h.err == nil && len(h.buf) >= maxHeldInput {
			h.cond.Wait()
		}
		ended := h.err != nil
		h.mu.Unlock()
		if ended {
			return
		}
	}
}

// close stops reading the agent's input: no command reads it.
func (h *heldInput) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		h.err = io.EOF
	}
	h.interrupt = nil
	h.cond.Broadcast()
}

// stopWatching ends the watch for Ctrl-C: the wait is over, and a 0x03
// is now the command's input.
func (h *heldInput) stopWatching() {
	h.mu.Lock()
	h.interrupt = nil
	h.mu.Unlock()
}

// Read returns input the agent sent, or the error that ended it once all
// of it was read.
func (h *heldInput) Read(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.buf) == 0 && h.err == nil {
		h.cond.Wait()
	}
	if len(h.buf) == 0 {
		return 0, h.err
	}
	n := copy(p, h.buf)
	h.buf = h.buf[n:]
	h.cond.Broadcast()
	return n, nil
}
