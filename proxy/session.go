package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/recorder"
)

// Session is an authenticated connection under one grant.
type Session struct {
	ID string

	conn     *Conn
	srv      *Server
	ctx      context.Context
	cancel   context.CancelCauseFunc
	grantID  string
	resource *config.Resource
	started  time.Time
	events   *recorder.Log
	log      *slog.Logger

	mu         sync.Mutex
	grant      *authz.Grant
	expiry     *time.Timer
	nextStmt   uint64
	statements int
	denied     int
	ended      bool
	// exitStatus and exitSignal are how the session's last command ended,
	// for its end event (see SetExit).
	exitStatus *int
	exitSignal string
	// recent are the texts of the session's latest statements, for a
	// hold's context; waits end the waits of its held messages, by hold
	// id (one at most, but for SSH, whose channels each may wait).
	recent []string
	waits  map[string]context.CancelCauseFunc
	// relay is the session's relay (see Relay); stopReason why it
	// stopped, relayClosed whether its connections are closed.
	relay       Relay
	stopReason  string
	relayClosed bool
	// running are the texts of the admitted statements whose outcome is
	// still to come, by id, copied into buffers that finished statements
	// leave in spareText; idle is closed when none is left (see
	// interrupt.go). stopMethods are the ways the running statements
	// were asked to stop since the grant ended, stop the outcome, for the
	// session's end.
	running     map[uint64][]byte
	spareText   [][]byte
	idle        chan struct{}
	stopMethods []string
	stop        *recorder.Stop
	// stmt is the statement event being appended (see appendStatements):
	// the recorder keeps nothing of it once appended.
	stmt recorder.Statement
}

// Context is cancelled, with the reason as its cause, when the session must
// end: grant revoked or expired, gateway shutting down.
func (s *Session) Context() context.Context { return s.ctx }

// Grant returns the current copy of the session's grant.
func (s *Session) Grant() *authz.Grant {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grant
}

// Conn is the client connection the session runs on.
func (s *Session) Conn() *Conn { return s.conn }

// Resource is the upstream this session reaches.
func (s *Session) Resource() *config.Resource { return s.resource }

// Logger carries session, proto, remote, agent, resource and grant.
func (s *Session) Logger() *slog.Logger { return s.log }

// Param is Server.Param: a bound parameter as the recorder keeps it.
func (s *Session) Param(v []byte, binary, null bool) recorder.Param {
	return s.srv.Param(v, binary, null)
}

// AppendParam is Server.AppendParam.
func (s *Session) AppendParam(buf, v []byte, binary, null bool) (recorder.Param, []byte) {
	return s.srv.AppendParam(buf, v, binary, null)
}

// ErrGrantEnded is the cause of a session ended because its grant was
// revoked or expired.
var ErrGrantEnded = errors.New("grant no longer active")

// setGrant installs a newer copy of the grant and ends the session if it
// is no longer active.
func (s *Session) setGrant(g *authz.Grant) {
	s.mu.Lock()
	s.grant = g
	s.mu.Unlock()
	if err := s.grantError(); err != nil {
		s.cancel(err)
	}
}

func (s *Session) watchExpiry() {
	g := s.Grant()
	if g.ExpiresAt.IsZero() {
		return
	}
	d := g.ExpiresAt.Sub(s.srv.now())
	s.mu.Lock()
	s.expiry = time.AfterFunc(d, func() {
		if err := s.grantError(); err != nil {
			s.cancel(err)
		}
	})
	s.mu.Unlock()
}

// grantError says why the grant no longer allows this session, or nil.
func (s *Session) grantError() error {
	g := s.Grant()
	switch g.EffectiveState(s.srv.now()) {
	case authz.StateActive:
		return nil
	case authz.StateRevoked:
		return fmt.Errorf("%w: grant %s was revoked by %s", ErrGrantEnded, g.ID, g.RevokedBy)
	case authz.StateExpired:
		return fmt.Errorf("%w: grant %s expired at %s", ErrGrantEnded, g.ID, g.ExpiresAt.UTC().Format(time.RFC3339))
	default:
		return fmt.Errorf("%w: grant %s is %s", ErrGrantEnded, g.ID, g.State)
	}
}

// Refusal is why a client message was not forwarded. Msg is written for
// the agent.
type Refusal struct {
	// Kind is "policy" (the grant does not allow it), "syntax" (the
	// parser could not read it; Syntax says what the parser said),
	// "recorder" (it could not be recorded) or "grant" (the grant is no
	// longer active, or cannot be confirmed).
	Kind string
	Msg  string
	// Syntax is the parser's error when Kind is "syntax".
	Syntax *authz.SyntaxError
	// Rule is the rule of the first refused statement (e.g.
	// "grant-unconfirmed"), for listeners whose error codes tell such
	// refusals apart.
	Rule string
}

func (r *Refusal) Error() string { return r.Msg }

var errNATSLost = &Refusal{Kind: "recorder", Msg: "airlock: recording unavailable and grant unconfirmed (the gateway lost its NATS connection); statement not executed"}

var errUnrecorded = &Refusal{Kind: "recorder", Msg: "airlock: recording unavailable; statement not executed (airlock runs nothing it cannot record)"}

// Admitted is a client message that was authorized, recorded and may be
// forwarded. Report each statement's outcome with Done. It is a value, so
// that admitting a statement allocates nothing; the zero Admitted admits
// nothing (Valid is false).
type Admitted struct {
	s *Session
	// first is the recorded id of statement 0; a message's statements
	// get consecutive ids.
	first uint64
	n     int
	start time.Time
}

// Len is the number of statements admitted.
func (a *Admitted) Len() int { return a.n }

// Valid reports whether a was returned by an admission, rather than
// being the zero Admitted.
func (a *Admitted) Valid() bool { return a.s != nil }

// Admit records the statements of one client message with their decisions
// and, when all are allowed, waits for the recorder to acknowledge them. It
// returns nil error only when the message may be forwarded. Denials are
// recorded too; the returned *Refusal says what to tell the client.
//
// params, if any, are the bound parameters of a single-statement execution
// (see Server.Param).
func (s *Session) Admit(v authz.Verdict, params ...recorder.Param) (*Admitted, error) {
	return pointer(s.admit(nil, v, params, true))
}

// AdmitContext is Admit for a client that can give up on its message
// while it is held: when ctx ends, the wait ends as cancelled (see
// CancelHold). Nothing else about the message depends on ctx.
func (s *Session) AdmitContext(ctx context.Context, v authz.Verdict, params ...recorder.Param) (*Admitted, error) {
	return pointer(s.admit(ctx, v, params, true))
}

// pointer is admit's result as Admit returns it.
func pointer(a Admitted, err error) (*Admitted, error) {
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// admit is Admit; holds says whether the grant's holds apply (not to a
// message refused whatever it holds, see Refuse); gaveUp, if not nil,
// ends a hold's wait as cancelled.
func (s *Session) admit(gaveUp context.Context, v authz.Verdict, params []recorder.Param, holds bool) (Admitted, error) {
	unconfirmed := false
	g := s.Grant()
	if err := s.srv.Grants.Ready(); err != nil {
		unconfirmed = true
		v = denyAll(v, "grant-unconfirmed", "the gateway cannot confirm your grant right now (control plane unavailable); nothing was executed")
	} else if err := s.grantError(); err != nil {
		v = denyAll(v, "grant-ended", strings.TrimPrefix(err.Error(), ErrGrantEnded.Error()+": ")+"; nothing was executed")
	} else if holds {
		v = authz.ApplyHolds(g, v)
	}
	now := s.srv.now()
	first, denied, ended := s.appendStatements(v, params, now, true, func(d authz.Decision) (string, string, string) {
		switch {
		case !d.Allow:
			return "deny", d.Rule, d.Reason
		case d.Hold:
			return "hold", d.Rule, d.Reason
		}
		return "allow", d.Rule, d.Reason
	})
	if ended != nil {
		return Admitted{}, ended
	}
	if !g.Holds.IsZero() {
		s.mu.Lock()
		for _, d := range v.Statements {
			s.remember(d.Text)
		}
		s.mu.Unlock()
	}

	allowed := len(v.Statements)
	if !v.Allow {
		allowed = 0
	}
	s.srv.Observer.Statements(s.conn.Proto, allowed, len(v.Statements)-allowed)
	// Commit bounds its wait by recorder.publish_timeout itself; the
	// session's context ends it early when the session ends.
	waited := time.Now()
	err := s.events.Commit(s.ctx)
	s.srv.Observer.Committed(time.Since(waited), err)
	if err == nil {
		s.announceDenied(now, denied)
	}
	if !v.Allow {
		if err != nil {
			s.log.Warn("refusal not yet recorded; it stays queued", "err", err)
			defer s.endIfBroken()
			if unconfirmed {
				// Losing NATS takes both the grant store and the
				// recorder.
				return Admitted{}, errNATSLost
			}
		}
		return Admitted{}, refusalFor(v)
	}
	if err != nil {
		s.log.Error("statement not recorded; refused", "err", err)
		defer s.endIfBroken()
		a := Admitted{s: s, first: first, n: len(v.Statements), start: now}
		for i := range a.n {
			a.Done(i, recorder.Result{Executed: false, Error: "recording unavailable; statement not executed"})
		}
		return Admitted{}, errUnrecorded
	}
	if v.Held() {
		return s.hold(gaveUp, g, v, params)
	}
	return s.newAdmitted(v, first), nil
}

// appendStatements appends a statement event for each statement of v with
// the decision, rule and reason decide gives it (decision "deny" counts as
// denied), and returns the first one's id (the others' follow it) and the
// denied ones. count says whether they are new statements of the session;
// a held message's decision records the same statements again, and they
// are not counted twice.
//
// An allowed statement's event is built in the session's own
// recorder.Statement, which the recorder does not keep; a denied one's is
// its own, with its own copy of the text and parameters, since the
// server's Denials get it after this returns (v's texts and params may
// be the client's message buffer, reused for its next message).
//
// After the session's end nothing is appended: it returns errEnded.
func (s *Session) appendStatements(v authz.Verdict, params []recorder.Param, now time.Time, count bool, decide func(authz.Decision) (decision, rule, reason string)) (first uint64, denied []*recorder.Statement, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return 0, nil, errEnded
	}
	first = s.nextStmt + 1
	for i, d := range v.Statements {
		st := &s.stmt
		*st = recorder.Statement{Index: i, Count: len(v.Statements), Text: d.Text, Class: d.Class}
		st.Decision, st.Rule, st.Reason = decide(d)
		if len(v.Statements) == 1 {
			st.Params = params
		}
		if st.Decision == "deny" {
			st = &recorder.Statement{}
			*st = s.stmt
			st.Text = strings.Clone(st.Text)
			st.Params = cloneParams(st.Params)
			denied = append(denied, st)
		}
		s.appendStatementLocked(st, now, count)
	}
	s.stmt = recorder.Statement{}
	return first, denied, nil
}

// cloneParams is a copy of ps whose values share no memory with them.
func cloneParams(ps []recorder.Param) []recorder.Param {
	if ps == nil {
		return nil
	}
	out := make([]recorder.Param, len(ps))
	for i, p := range ps {
		p.Type, p.Value, p.Format = strings.Clone(p.Type), strings.Clone(p.Value), strings.Clone(p.Format)
		out[i] = p
	}
	return out
}

// appendStatementLocked gives st the session's next statement id, counts
// it (as new when count says so, as denied by its decision) and appends
// its event. s.mu is held and the session has not ended.
func (s *Session) appendStatementLocked(st *recorder.Statement, now time.Time, count bool) {
	s.nextStmt++
	st.ID = s.nextStmt
	if count {
		s.statements++
	}
	if st.Decision == "deny" {
		s.denied++
	}
	s.events.Append(recorder.Event{Type: recorder.TypeStatement, Time: now, Statement: st})
}

// errEnded refuses a message that arrives after its session ended (a
// cancel request racing the end): its record would follow the
// session.end, which verification rightly reports as tampering.
var errEnded = errors.New("airlock: the session has ended; statement not executed")

// announceDenied tells the server's Denials of recorded denied
// statements.
func (s *Session) announceDenied(at time.Time, sts []*recorder.Statement) {
	if s.srv.Denials == nil {
		return
	}
	for _, st := range sts {
		s.srv.Denials.StatementDenied(&recorder.Event{Type: recorder.TypeStatement, Session: s.ID, Time: at, Meta: s.events.Meta(), Statement: st})
	}
}

func denyAll(v authz.Verdict, rule, reason string) authz.Verdict {
	out := authz.Verdict{Statements: make([]authz.Decision, len(v.Statements))}
	for i, d := range v.Statements {
		d.Allow, d.Rule, d.Reason = false, rule, reason
		out.Statements[i] = d
	}
	if len(out.Statements) == 0 {
		out.Statements = []authz.Decision{{Rule: rule, Reason: reason}}
	}
	return out
}

// refusalFor writes one message for the client from the denied statements
// of a verdict.
func refusalFor(v authz.Verdict) *Refusal {
	kind, rule := "policy", ""
	var syntax *authz.SyntaxError
	var parts []string
	for i, d := range v.Statements {
		if d.Allow || d.Rule == "batch" {
			continue
		}
		if rule == "" {
			rule = d.Rule
		}
		switch {
		case strings.HasPrefix(d.Rule, "grant-"):
			kind = "grant"
		case d.Syntax != nil && kind == "policy" && syntax == nil:
			// The first statement the parser could not read decides
			// what the client is told, as the server would.
			kind, syntax = "syntax", d.Syntax
		}
		msg := d.Reason
		if len(v.Statements) > 1 {
			msg = fmt.Sprintf("statement %d of %d refused: %s", i+1, len(v.Statements), d.Reason)
		}
		parts = append(parts, msg)
		if len(parts) == 3 {
			break
		}
	}
	msg := "airlock: " + strings.Join(parts, "; ")
	if len(v.Statements) > 1 {
		msg += " (nothing in this message was executed)"
	}
	if kind != "syntax" {
		syntax = nil
	}
	return &Refusal{Kind: kind, Msg: msg, Syntax: syntax, Rule: rule}
}

// Done records the outcome of statement i of the message. It does not wait
// for the recorder: the outcome rides on the session's next event, which
// the next Admit waits for.
func (a *Admitted) Done(i int, r recorder.Result) {
	if i < 0 || i >= a.n {
		return
	}
	r.ID = a.first + uint64(i)
	if r.DurationUS == 0 && r.Executed {
		r.DurationUS = a.s.srv.now().Sub(a.start).Microseconds()
	}
	a.s.mu.Lock()
	a.s.finished(&r)
	a.s.mu.Unlock()
	a.s.events.Result(r)
}

// Restart marks now as the start of the next statement's duration, for
// messages whose statements run one after another.
func (a *Admitted) Restart() { a.start = a.s.srv.now() }

// SetExit notes how the session's last command ended, as its client was
// told (SSH: the exit status or signal of a channel that closed); End
// records the last one noted. A nil status and "" signal note a command
// that ended without either.
func (s *Session) SetExit(status *int, signal string) {
	s.mu.Lock()
	s.exitStatus, s.exitSignal = status, signal
	s.mu.Unlock()
}

// End records the session's end with reason and stops tracking it. It is
// safe to call more than once; only the first call counts.
func (s *Session) End(reason string) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	if s.expiry != nil {
		s.expiry.Stop()
	}
	end := &recorder.End{
		Reason: reason, Statements: s.statements, Denied: s.denied,
		DurationMS: s.srv.now().Sub(s.started).Milliseconds(),
		ExitStatus: s.exitStatus, ExitSignal: s.exitSignal,
		Stop: s.stop,
	}
	// Appended under the lock appendStatements takes, so that no
	// statement (a cancel request from another connection, say) lands
	// after the end.
	s.events.Append(recorder.Event{Type: recorder.TypeSessionEnd, End: end})
	s.mu.Unlock()
	s.srv.untrack(s)
	s.srv.Observer.SessionEnded(s.conn.Proto)
	s.cancel(errors.New("session ended: " + reason))
	// The session's own context is done; the end event still gets its
	// full publish timeout.
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.publishTimeout())
	defer cancel()
	if err := s.events.Commit(ctx); err != nil {
		s.log.Error("session end not recorded", "err", err, "pending", s.events.Pending())
	}
	s.log.Info("session ended", "reason", reason, "statements", end.Statements, "denied", end.Denied)
}
