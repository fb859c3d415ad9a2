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
	switch {
	case a.authed && !a.started:
		a.s.Status = StatusAuthFailed
	case !a.started:
		return a.s, false
	case a.s.End != nil:
		a.s.Status = StatusEnded
	case a.s.Interrupted != nil:
		a.s.Status = StatusInterrupted
		t := a.noted
		a.s.End = &t
		a.s.EndReason = "interrupted: " + a.s.Interrupted.Reason
	default:
		a.s.Status = StatusOpen
	}
	return a.s, true
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
