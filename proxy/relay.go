package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/recorder"
)

// Relay is what a protocol's relay gives the session lifecycle (see
// Session.Relay). The unit of work it reads (a query, a prepared execute,
// a command, an SSH request) goes through Session.Forward.
type Relay interface {
	// Run relays between the client and the upstream until either side
	// stops, or Close is called, and returns why it stopped. It is
	// called once.
	Run() string
	// Terminate tells the client, in its protocol, that the session is
	// ending and why: msg is written for the agent (the grant was revoked
	// or expired, the gateway is shutting down). Close follows. It must
	// not block for long on a client that does not read.
	Terminate(msg string)
	// Close closes the client and the upstream connections, which makes
	// Run return. It is called once.
	Close()
	// Interrupt says how it would stop the work the upstream runs for
	// the session, as hard as step says (see interrupt.go): the method
	// ("cancel", "terminate", "kill-query", "kill-connection", "signal",
	// "close"), and do, which does it and says why it could not; "" and
	// nil when there is nothing to do at this step. The session notes
	// the method before calling do, so the server's answer, which may
	// come before do returns, is recorded as stopped by it. do returns
	// within its ctx. The relay keeps running meanwhile, so that answer
	// reaches the client and the record.
	Interrupt(step StopStep) (method string, do func(ctx context.Context) error)
}

// Relay runs r as the session's relay, and returns why the session ended:
// the first of the reasons given by Stop, by r.Run, or the cause that
// ended the session's context (a revoked or expired grant, shutdown), in
// which case the client is told with r.Terminate before both connections
// close; a revoked or expired grant's running statements are stopped
// first (stopRunning). The caller ends the session with the reason (End).
func (s *Session) Relay(r Relay) string {
	s.mu.Lock()
	s.relay = r
	s.mu.Unlock()
	fired := make(chan struct{})
	stop := context.AfterFunc(s.ctx, func() {
		defer close(fired)
		cause := context.Cause(s.ctx)
		// The cause is why, whatever the relay says when its
		// connections close under it.
		s.setStopReason(cause.Error())
		if errors.Is(cause, ErrGrantEnded) {
			// The approver's brake stops the work, not only the
			// session.
			s.stopRunning(r)
		}
		r.Terminate(EndMessage(cause))
		s.Stop(cause.Error())
	})
	s.Stop(r.Run())
	if !stop() {
		<-fired // it ran: let it finish telling the client
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopReason
}

// Stop ends the session's relay with why (the first reason counts):
// both connections close, and Run returns. A message waiting for an
// approver stops waiting: nobody is left to answer.
func (s *Session) Stop(why string) {
	s.setStopReason(why)
	s.mu.Lock()
	r, closed := s.relay, s.relayClosed
	s.relayClosed = true
	s.mu.Unlock()
	if r != nil && !closed {
		r.Close()
	}
	s.cancelHolds(errors.New("the session ended while the statement waited: " + why))
}

// StopReason is why the session's relay is ending, or "" while it runs.
func (s *Session) StopReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopReason
}

func (s *Session) setStopReason(why string) {
	s.mu.Lock()
	if s.stopReason == "" {
		s.stopReason = why
	}
	s.mu.Unlock()
}

// EndMessage is what the agent is told when its session's context ended
// with cause: the grant's own words for a revoked or expired grant.
func EndMessage(cause error) string {
	return strings.TrimPrefix(cause.Error(), ErrGrantEnded.Error()+": ")
}

// Forward runs one unit of the client's work under its verdict: the unit's
// statements are recorded with their decisions (Admit), and only when all
// are allowed and the recorder has acknowledged them does forward send the
// unit upstream; otherwise refuse answers the client, in its protocol,
// with the *Refusal that says why. It returns forward's or refuse's error.
// params, if any, are the bound parameters of a single-statement
// execution (see Server.Param).
func (s *Session) Forward(v authz.Verdict, params []recorder.Param, forward func(Admitted) error, refuse func(*Refusal) error) error {
	return s.forward(nil, v, params, forward, refuse)
}

// ForwardContext is Forward for a client that can give up on the unit
// while it is held: when ctx ends, the wait ends as cancelled (see
// AdmitContext).
func (s *Session) ForwardContext(ctx context.Context, v authz.Verdict, params []recorder.Param, forward func(Admitted) error, refuse func(*Refusal) error) error {
	return s.forward(ctx, v, params, forward, refuse)
}

// forward is Forward; gaveUp, if not nil, ends a hold's wait.
func (s *Session) forward(gaveUp context.Context, v authz.Verdict, params []recorder.Param, forward func(Admitted) error, refuse func(*Refusal) error) error {
	adm, err := s.admit(gaveUp, v, params, true)
	if err != nil {
		return refuse(asRefusal(err))
	}
	return forward(adm)
}

// Refuse records v, a verdict that refuses its message (a denied
// request, a message refused whatever it holds), and returns what to tell
// the client. Each statement is recorded with its own decision, as Admit
// records them; the message is refused even where v says Allow, and the
// grant's holds do not apply.
func (s *Session) Refuse(v authz.Verdict) *Refusal {
	// Refused whatever the grant holds: a hold would let a person turn a
	// refusal its caller has already answered into a run.
	v.Allow = false
	_, err := s.admit(nil, v, nil, false)
	return asRefusal(err)
}

// asRefusal is err, a refusal from Admit, as a *Refusal.
func asRefusal(err error) *Refusal {
	var ref *Refusal
	if errors.As(err, &ref) {
		return ref
	}
	return &Refusal{Kind: "recorder", Msg: err.Error()}
}

// Violation records a client message that breaks its protocol (malformed,
// out of order, of an unknown type), as a refused statement of kind
// PROTOCOL with msg as the reason. The caller tells the client in its
// protocol and ends the session.
func (s *Session) Violation(msg string) {
	s.Refuse(authz.SingleVerdict(authz.Decision{
		Text: "<protocol message>", Rule: "protocol", Reason: msg,
		Class: authz.Classification{Kind: "PROTOCOL", Required: authz.AccessAdmin},
	}))
}

// ReadEnded says why reading the client failed with err: the client
// stalled in the middle of a message (stalled is true: tell it so before
// ending), disconnected, or the read failed.
func (c *Conn) ReadEnded(err error) (reason string, stalled bool) {
	switch {
	case c.Stalled(err):
		return c.StalledReason(), true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "client disconnected", false
	}
	return "client read failed: " + err.Error(), false
}
