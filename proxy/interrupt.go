package proxy

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/recorder"
)

// Revocation is the approver's emergency brake: ending the client's
// connection is not enough, because a statement already running on the
// server (a long UPDATE, a sleep, a remote command) keeps running after its
// client is gone. So when the grant ends while statements run, the session
// asks the relay to stop them (Relay.Interrupt), gently first, then harder
// after grants.stop_grace, and records what ran, how it was stopped and
// whether the server confirmed it (recorder.Stop on session.end; each
// stopped statement's outcome carries the methods).

// StopStep is how hard Relay.Interrupt is asked to stop the upstream's
// work.
type StopStep int

const (
	// StopCancel asks the upstream to stop the running statement and
	// keep its connection: a Postgres CancelRequest, MySQL KILL QUERY,
	// SIGTERM to an SSH command.
	StopCancel StopStep = iota
	// StopTerminate ends the upstream's backend, connection or process:
	// pg_terminate_backend, KILL CONNECTION, SIGKILL and closing the SSH
	// channel.
	StopTerminate
)

// runningText is how much of a running statement's text Stop keeps; the
// whole text is on its statement event.
const runningText = 200

// maxSpare is how many buffers of finished statements' texts a session
// keeps for the next; maxSpareText is their size, a clipped text with its
// ellipsis.
const (
	maxSpare     = 16
	maxSpareText = runningText + 8
)

// newAdmitted is what Admit returns for the allowed statements of v, whose
// ids begin at first: they count as running until their outcome is
// reported (Done) or the protocol says there will be none (Settled).
// Their texts are copied, into buffers that finished statements hand on.
func (s *Session) newAdmitted(v authz.Verdict, first uint64) Admitted {
	s.mu.Lock()
	if s.running == nil {
		s.running = map[uint64][]byte{}
	}
	for i, d := range v.Statements {
		var b []byte
		if n := len(s.spareText); n > 0 {
			b, s.spareText = s.spareText[n-1], s.spareText[:n-1]
		} else {
			b = make([]byte, 0, maxSpareText)
		}
		s.running[first+uint64(i)] = append(b, clipText(d.Text, runningText)...)
	}
	s.mu.Unlock()
	return Admitted{s: s, first: first, n: len(v.Statements), start: s.srv.now()}
}

// Settled tells the session that the admitted statements will have no
// outcome reported (an SSH env request is a setting, not work): they are
// not running.
func (a *Admitted) Settled() {
	a.s.mu.Lock()
	for i := range a.n {
		a.s.ranOut(a.first + uint64(i))
	}
	a.s.mu.Unlock()
}

// finished notes r's statement as no longer running and, when the session
// was stopping it, says how on r. s.mu is held.
func (s *Session) finished(r *recorder.Result) {
	if _, ok := s.running[r.ID]; ok && len(s.stopMethods) > 0 {
		r.Stopped = slices.Clone(s.stopMethods)
	}
	s.ranOut(r.ID)
}

// ranOut removes id from the running statements, keeping its text's
// buffer for the next. s.mu is held.
func (s *Session) ranOut(id uint64) {
	if b, ok := s.running[id]; ok && cap(b) <= maxSpareText && len(s.spareText) < maxSpare {
		s.spareText = append(s.spareText, b[:0])
	}
	delete(s.running, id)
	if len(s.running) == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// runningNow lists the running statements by id, and returns a channel
// closed once none is left (nil when none is running now).
func (s *Session) runningNow() ([]recorder.Running, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.running) == 0 {
		return nil, nil
	}
	out := make([]recorder.Running, 0, len(s.running))
	for id, text := range s.running {
		out = append(out, recorder.Running{ID: id, Text: string(text)})
	}
	slices.SortFunc(out, func(a, b recorder.Running) int { return cmp.Compare(a.ID, b.ID) })
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	return out, s.idle
}

// stopGrace is grants.stop_grace.
func (s *Session) stopGrace() time.Duration {
	if s.srv != nil && s.srv.Config != nil && s.srv.Config.Grants.StopGrace > 0 {
		return s.srv.Config.Grants.StopGrace
	}
	return config.DefaultStopGrace
}

// stopRunning stops the statements running when the grant ended: each
// step of r.Interrupt in turn, each given the grace to take effect, until
// none runs. The relay still runs meanwhile, so the server's answer (the
// cancelled statement's error, the backend's FATAL, the exit signal) is
// relayed to the client and recorded as the statement's outcome; no new
// statement is admitted, the grant being over. The outcome goes on the
// session's end. If the stop cannot be confirmed the caller still closes
// both connections: the server notices the closed connection in time.
func (s *Session) stopRunning(r Relay) {
	running, idle := s.runningNow()
	if running == nil {
		return
	}
	began := time.Now()
	grace := s.stopGrace()
	stop := &recorder.Stop{Running: running, Methods: []string{}, Outcome: recorder.StopUnconfirmed}
	for _, step := range []StopStep{StopCancel, StopTerminate} {
		method, do := r.Interrupt(step)
		if do == nil {
			continue // nothing this step could do
		}
		s.mu.Lock()
		s.stopMethods = append(s.stopMethods, method)
		stop.Methods = slices.Clone(s.stopMethods)
		s.mu.Unlock()
		// The session's context is over (that is why we stop); each
		// request gets the grace of its own.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), grace)
		err := do(ctx)
		cancel()
		if err != nil {
			stop.Errors = append(stop.Errors, fmt.Sprintf("%s: %v", method, err))
			if s.log != nil {
				s.log.Warn("could not stop the running statement", "method", method, "err", err)
			}
			if step != StopTerminate {
				continue // nothing to wait for: escalate at once
			}
		}
		t := time.NewTimer(grace)
		select {
		case <-idle:
			t.Stop()
			stop.Outcome = recorder.StopStopped
		case <-t.C:
		}
		if stop.Outcome == recorder.StopStopped {
			break
		}
	}
	stop.DurationMS = time.Since(began).Milliseconds()
	s.mu.Lock()
	s.stop = stop
	s.mu.Unlock()
	if s.log != nil {
		s.log.Info("stopped running work of an ended grant", "methods", stop.Methods, "outcome", stop.Outcome, "statements", len(running))
	}
}
