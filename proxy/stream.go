package proxy

import (
	"context"

	"github.com/airlockhq/airlock/recorder"
)

// Streams: events that belong to an admitted statement but are not its
// decision or result, such as the chunks of an SSH channel's data. They
// are appended without waiting; the protocol decides when it must wait
// (Flush) before relaying more, and ends the session when it cannot.

// ID is the recorded id of statement i of the message; the events about
// it (result, data) carry it.
func (a *Admitted) ID(i int) uint64 {
	if i < 0 || i >= a.n {
		return 0
	}
	return a.first + uint64(i)
}

// Record appends ev to the session's events without waiting for the
// recorder.
func (s *Session) Record(ev recorder.Event) {
	s.events.Append(ev)
}

// Flush waits until every event recorded so far is acknowledged, for at
// most the recorder's publish timeout. It still waits when the session's
// context is done: what was relayed before the end should be on record.
func (s *Session) Flush() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.publishTimeout())
	defer cancel()
	return s.events.Commit(ctx)
}
