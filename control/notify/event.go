// Package notify tells people what needs them: a request that waits, a
// grant decided or ended, a statement denied, a session interrupted. It
// turns grant changes and recorded events into notifications kept in a
// JetStream stream, and delivers each to the webhook targets of the
// gateway's notify config (Standard Webhooks or Slack), at least once,
// from durable consumers shared by every gateway replica. Nothing on a
// session's, a grant's or the API's path waits for a target: producers
// hand notifications over and return. See docs/notifications.md.
package notify

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/recorder"
)

// Notification types.
const (
	RequestCreated     = "request.created"
	RequestApproved    = "request.approved"
	RequestDenied      = "request.denied"
	GrantRevoked       = "grant.revoked"
	GrantExpired       = "grant.expired"
	StatementDenied    = "statement.denied"
	StatementHeld      = "statement.held"
	SessionInterrupted = "session.interrupted"
)

// MaxStatementText is how much of a denied statement's text a
// notification carries; longer text is cut at a character boundary and
// marked with statement_truncated.
const MaxStatementText = 1000

// Notification is one thing to tell the targets, as stored in the
// notifications stream. ID is stable: every target receives it as
// webhook-id on every attempt, so receivers deduplicate by it.
type Notification struct {
	ID   string    `json:"id"`
	Type string    `json:"type"`
	Time time.Time `json:"timestamp"`
	Data Data      `json:"data"`
}

// Data is what a notification says. Which members are set depends on its
// type; see docs/notifications.md.
type Data struct {
	// RequestID is set on request.* notifications, GrantID on every
	// notification about a grant (a request is a pending grant: the same
	// id).
	RequestID string `json:"request_id,omitempty"`
	GrantID   string `json:"grant_id,omitempty"`
	Agent     string `json:"agent"`
	Task      string `json:"task,omitempty"`
	Resource  string `json:"resource"`
	Access    string `json:"access,omitempty"`
	// TTL is how long the grant lasts once approved (request.created).
	TTL string `json:"ttl,omitempty"`
	// Tables and SSH summarise the grant's scope.
	Tables []string `json:"tables,omitempty"`
	SSH    string   `json:"ssh,omitempty"`
	// By is who approved, denied or revoked; Comment is what the
	// approver wrote on an approval (a denial's reason is Reason).
	By        string     `json:"by,omitempty"`
	Comment   string     `json:"comment,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Session, Statement, Rule and Reason describe a denied or held
	// statement or an interrupted session.
	Session            string `json:"session,omitempty"`
	Protocol           string `json:"protocol,omitempty"`
	Statement          string `json:"statement,omitempty"`
	StatementTruncated bool   `json:"statement_truncated,omitempty"`
	Rule               string `json:"rule,omitempty"`
	Reason             string `json:"reason,omitempty"`
	// HoldID names a held statement (statement.held), Params are its
	// prepared parameters as text, and ExpiresAt is when it is refused
	// if nobody decides.
	HoldID string   `json:"hold_id,omitempty"`
	Params []string `json:"params,omitempty"`
	// URL is the console page to act on or read it.
	URL string `json:"url,omitempty"`
}

// idFor is a notification's id: its type and the id of what it is about,
// so two gateway replicas noticing the same fact make the same id, and
// JetStream's duplicate window keeps one.
func idFor(typ string, parts ...string) string {
	return "msg_" + strings.ReplaceAll(typ, ".", "_") + "_" + strings.Join(parts, "_")
}

// FromGrant is the notification of type typ about grant g.
func FromGrant(typ string, g *authz.Grant, consoleURL string, now time.Time) *Notification {
	d := Data{
		GrantID:  g.ID,
		Agent:    g.Agent,
		Task:     g.Task,
		Resource: g.Resource,
		Access:   grantAccess(g),
		Tables:   g.Scope.Tables,
		SSH:      sshSummary(g.SSH),
	}
	page := "/ui/grants/"
	switch typ {
	case RequestCreated:
		d.RequestID, d.TTL = g.ID, time.Duration(g.TTL).String()
		page = "/ui/requests/"
	case RequestApproved:
		d.RequestID, d.By, d.Comment = g.ID, g.DecidedBy, g.Comment
	case RequestDenied:
		d.RequestID, d.By, d.Reason = g.ID, g.DecidedBy, g.Comment
		page = "/ui/requests/"
	case GrantRevoked:
		d.By = g.RevokedBy
	}
	if !g.ExpiresAt.IsZero() && typ != RequestDenied {
		t := g.ExpiresAt.UTC()
		d.ExpiresAt = &t
	}
	d.URL = link(consoleURL, page, g.ID)
	return &Notification{ID: idFor(typ, g.ID), Type: typ, Time: now.UTC(), Data: d}
}

// FromEvent is the notification a recorded event calls for: a denied
// statement or an interrupted session; nil for any other event.
func FromEvent(ev *recorder.Event, consoleURL string) *Notification {
	d := Data{
		GrantID:  ev.Grant,
		Agent:    ev.Agent,
		Task:     ev.Task,
		Resource: ev.Resource,
		Access:   ev.Access,
		Session:  ev.Session,
		Protocol: ev.Protocol,
		URL:      link(consoleURL, "/ui/sessions/", ev.Session),
	}
	switch {
	case ev.Type == recorder.TypeStatement && ev.Statement != nil && ev.Statement.Decision == "deny":
		d.Statement, d.StatementTruncated = cut(ev.Statement.Text, MaxStatementText)
		if ev.Statement.TextRef != nil {
			d.StatementTruncated = true
		}
		d.Rule, d.Reason = ev.Statement.Rule, ev.Statement.Reason
		return &Notification{ID: idFor(StatementDenied, ev.Session, uitoa(ev.Statement.ID)), Type: StatementDenied, Time: ev.Time.UTC(), Data: d}
	case ev.Type == recorder.TypeSessionInterrupted:
		if ev.Interrupted != nil {
			d.Reason = ev.Interrupted.Reason
		}
		return &Notification{ID: idFor(SessionInterrupted, ev.Session), Type: SessionInterrupted, Time: ev.Time.UTC(), Data: d}
	}
	return nil
}

// FromHold is the statement.held notification of hold h, which waits for
// an approver: the held statements' text (joined, as sent in one
// message), the rule that held them, and the console page where it is
// decided.
func FromHold(h *authz.Hold, consoleURL string) *Notification {
	d := Data{
		GrantID:  h.Grant,
		Agent:    h.Agent,
		Task:     h.Task,
		Resource: h.Resource,
		Session:  h.Session,
		HoldID:   h.ID,
		URL:      link(consoleURL, "/ui/holds/", h.ID),
	}
	var text []string
	for _, st := range h.Statements {
		text = append(text, st.Text)
		if st.Hold && d.Rule == "" {
			d.Rule, d.Reason = st.Rule, st.Reason
		}
		d.Params = append(d.Params, st.Params...)
	}
	d.Statement, d.StatementTruncated = cut(strings.Join(text, "; "), MaxStatementText)
	if !h.ExpiresAt.IsZero() {
		t := h.ExpiresAt.UTC()
		d.ExpiresAt = &t
	}
	return &Notification{ID: idFor(StatementHeld, h.ID), Type: StatementHeld, Time: h.CreatedAt.UTC(), Data: d}
}

func grantAccess(g *authz.Grant) string {
	if !g.SSH.IsZero() {
		return "ssh"
	}
	return g.Access.String()
}

func sshSummary(p authz.SSHPolicy) string {
	return strings.Join(p.Allows(), ", ")
}

func link(base, page, id string) string {
	if base == "" {
		return ""
	}
	return strings.TrimRight(base, "/") + page + id
}

// cut returns s cut to at most n bytes at a character boundary, and
// whether it was cut.
func cut(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], true
}

func uitoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
