package proxy

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/recorder"
)

// A held message (see authz.Holds) is recorded with decision "hold" and
// acknowledged before anyone is asked; then it waits in the server's Holds
// while the client simply waits for its answer. When a person approves it,
// each statement is recorded again with decision "allow", rule
// "hold-approved" and the approver in its reason, and those are the
// statements that run and get outcomes; when it is denied, expires or the
// client gives up, each is recorded with decision "deny" and rule
// "hold-denied", "hold-expired" or "hold-cancelled", and the client gets a
// refusal in its protocol. A session of a database waits for one held
// message at a time: its client is waiting for that message's answer; an
// SSH session may wait for one on each of its channels.

// keepRecent is how many of the session's latest statements a hold shows
// its approver.
const keepRecent = 5

// remember keeps text among the session's recent statements, in a copy of
// its own (text may be the client's message buffer). s.mu is held.
func (s *Session) remember(text string) {
	if len(s.recent) == keepRecent {
		copy(s.recent, s.recent[1:])
		s.recent = s.recent[:keepRecent-1]
	}
	s.recent = append(s.recent, strings.Clone(clipText(text, 4096)))
}

// clipText is s cut to at most n bytes, on a character boundary.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return recorder.PrefixOf(s, n) + "…"
}

// ErrHoldCancelled is the cause of a hold the client gave up on (a
// Postgres cancel request, MySQL KILL QUERY, the SSH channel closing).
var ErrHoldCancelled = errors.New("the client cancelled the statement while it waited for an approver")

// CancelHold ends the wait of the session's held messages, if one waits,
// and reports whether one did. (A client that can give up on one message
// among several waiting passes a context to AdmitContext instead.)
func (s *Session) CancelHold() bool { return s.cancelHolds(ErrHoldCancelled) }

// cancelHolds ends every wait of the session with cause.
func (s *Session) cancelHolds(cause error) bool {
	s.mu.Lock()
	waits := make([]context.CancelCauseFunc, 0, len(s.waits))
	for _, cancel := range s.waits {
		waits = append(waits, cancel)
	}
	s.mu.Unlock()
	for _, cancel := range waits {
		cancel(cause)
	}
	return len(waits) > 0
}

// Holding reports whether a message of the session waits for an approver.
func (s *Session) Holding() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waits) > 0
}

// hold waits for a person to decide v, whose statements are recorded as
// held, and records the decision; approved, it returns the statements to
// forward. gaveUp, if not nil, ends the wait as cancelled.
func (s *Session) hold(gaveUp context.Context, g *authz.Grant, v authz.Verdict, params []recorder.Param) (Admitted, error) {
	now := s.srv.now()
	h := &authz.Hold{
		ID: newHoldID(), Session: s.ID, Grant: g.ID, Agent: g.Agent, Resource: g.Resource, Task: g.Task,
		CreatedAt: now, ExpiresAt: now.Add(g.Holds.Wait()), State: authz.HoldPending,
	}
	for _, d := range v.Statements {
		// Copies: the hold outlives the client's message buffer.
		hs := authz.HeldStatement{Text: strings.Clone(d.Text), Kind: d.Class.Kind, Hold: d.Hold}
		if d.Hold {
			hs.Rule, hs.Reason = d.Rule, d.Reason
		}
		if len(v.Statements) == 1 {
			for _, p := range params {
				hs.Params = append(hs.Params, paramText(p))
			}
		}
		h.Statements = append(h.Statements, hs)
	}
	ctx, cancel := context.WithCancelCause(s.ctx)
	defer cancel(nil)
	if gaveUp != nil {
		stop := context.AfterFunc(gaveUp, func() { cancel(ErrHoldCancelled) })
		defer stop()
	}
	s.mu.Lock()
	if n := len(s.recent) - len(v.Statements); n > 0 {
		h.Before = append([]string(nil), s.recent[:n]...)
	}
	if s.waits == nil {
		s.waits = map[string]context.CancelCauseFunc{}
	}
	s.waits[h.ID] = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waits, h.ID)
		s.mu.Unlock()
	}()
	s.log.Info("statement held for an approver", "hold", h.ID, "expires", h.ExpiresAt)
	decided := h
	var err error
	if s.srv.Holds == nil {
		err = errors.New("this gateway keeps no holds")
	} else {
		decided, err = s.srv.Holds.Wait(ctx, h)
	}
	if err != nil {
		s.log.Error("hold failed; the message is refused", "hold", h.ID, "err", err)
		decided = &authz.Hold{State: authz.HoldCancelled, Comment: "the hold could not be kept (" + err.Error() + ")"}
	}
	if decided.State == authz.HoldCancelled && s.ctx.Err() != nil {
		// The session itself ended (revoked, expired, shutdown).
		decided.Comment = context.Cause(s.ctx).Error()
	}
	return s.decided(h.ID, v, params, decided)
}

// decided records how a held message was decided and returns what Admit
// returns for it.
func (s *Session) decided(id string, v authz.Verdict, params []recorder.Param, h *authz.Hold) (Admitted, error) {
	now := s.srv.now()
	// rule and reason go on the events; told is what the client reads
	// before the reason when the message is refused.
	decision, kind, rule, reason, told := "deny", "policy", "", "", ""
	switch h.State {
	case authz.HoldApproved:
		decision, rule, reason = "allow", "hold-approved", "approved by "+h.DecidedBy
	case authz.HoldDenied:
		rule, reason, told = "hold-denied", "denied by "+h.DecidedBy, "the held statement was denied"
	case authz.HoldExpired:
		rule, reason, told = "hold-expired", "no approver decided within the grant's hold timeout", "the held statement timed out"
	default:
		kind, rule, reason, told = "cancelled", "hold-cancelled", "the wait for an approver ended", "the held statement was cancelled"
	}
	if h.Comment != "" {
		reason += ": " + h.Comment
	}
	reason = fmt.Sprintf("%s (hold %s)", reason, id)
	first, denied, err := s.appendStatements(v, params, now, false, func(authz.Decision) (string, string, string) {
		return decision, rule, reason
	})
	if err != nil {
		return Admitted{}, err
	}
	// The decision is recorded before the statement runs or the client
	// hears of it, even when the session's context has ended (a revoked
	// grant cancels the wait): it has a publish timeout of its own.
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.publishTimeout())
	defer cancel()
	if err := s.events.Commit(ctx); err != nil {
		s.log.Error("hold decision not recorded; refused", "err", err)
		defer s.endIfBroken()
		return Admitted{}, errUnrecorded
	}
	s.announceDenied(now, denied)
	if decision == "deny" {
		return Admitted{}, &Refusal{Kind: kind, Rule: rule, Msg: "airlock: " + told + ": " + reason}
	}
	return s.newAdmitted(v, first), nil
}

func paramText(p recorder.Param) string {
	switch {
	case p.Null:
		return "NULL"
	case p.Redacted:
		return "(redacted)"
	}
	return strings.Clone(clipText(p.Value, 256))
}

func newHoldID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "hold_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}
