package recorder

import "time"

// summarizer folds a session's start, auth and end events into a Summary.
type summarizer struct {
	s               Summary
	started, authed bool
	// noted is when a session.interrupted note was written.
	noted time.Time
}

func (a *summarizer) add(ev *Event) {
	a.s.Session = ev.Session
	switch ev.Type {
	case TypeSessionStart:
		a.started = true
		a.s.Meta, a.s.Start = ev.Meta, ev.Time
		if ev.Start != nil {
			a.s.Instance = ev.Start.Instance
		}
	case TypeAuthFailed:
		if !a.started {
			a.s.Meta, a.s.Start = ev.Meta, ev.Time
		}
		a.authed = true
	case TypeSessionEnd:
		t := ev.Time
		a.s.End = &t
		if ev.End != nil {
			a.s.EndReason = ev.End.Reason
			a.s.Statements = ev.End.Statements
			a.s.Denied = ev.End.Denied
		}
	case TypeSessionInterrupted:
		if ev.Interrupted != nil {
			a.s.Interrupted, a.s.InterruptedBy, a.noted = ev.Interrupted, ev.Gateway, ev.Time
		}
	}
}

// summary returns the Summary, and false when the events held neither a
// start nor a refused login (the session began before what was read).
func (a *summarizer) summary() (Summary, bool) {
	if !a.started && !a.authed {
		return a.s, false
	}
	a.s.Status = statusOf(a.started, a.authed, a.s.End != nil, a.s.Interrupted != nil)
	if a.s.Status == StatusInterrupted {
		interrupted(&a.s, a.noted)
	}
	return a.s, true
}

// statusOf is a session's status from what its events said: it started
// or only had its login refused, it ended, a gateway noted it interrupted.
// A session that ended after an interruption note (its gateway had lost
// NATS, not stopped) is ended.
func statusOf(started, authed, ended, noted bool) string {
	switch {
	case authed && !started:
		return StatusAuthFailed
	case ended:
		return StatusEnded
	case noted:
		return StatusInterrupted
	}
	return StatusOpen
}

// interrupted sets an interrupted session's end to when that was noted.
func interrupted(s *Summary, noted time.Time) {
	s.End = &noted
	s.EndReason = "interrupted: " + s.Interrupted.Reason
}

// Summarize is the Summary of one session's events.
func Summarize(evs []Event) Summary {
	var a summarizer
	for i := range evs {
		a.add(&evs[i])
	}
	s, _ := a.summary()
	return s
}
