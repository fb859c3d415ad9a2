// Package recorder writes the gateway's events to JetStream and reads them
// back. It knows sessions, statements and decisions, not wire protocols.
package recorder

import (
	"time"

	"github.com/airlockhq/airlock/authz"
)

// Version is the event schema version written into every event.
const Version = 1

// Event types.
const (
	TypeSessionStart    = "session.start"
	TypeStatement       = "statement"
	TypeStatementResult = "statement.result"
	TypeAuthFailed      = "auth.failed"
	TypeSessionEnd      = "session.end"
)

// Event is one recorded fact. Every event carries who (agent), why (task,
// grant, approver) and where (resource, protocol, client), so each one can
// be read on its own.
type Event struct {
	V       int       `json:"v"`
	Type    string    `json:"type"`
	Session string    `json:"session"`
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Meta

	Statement *Statement   `json:"statement,omitempty"`
	Result    *Result      `json:"result,omitempty"`
	Auth      *AuthFailure `json:"auth,omitempty"`
	End       *End         `json:"end,omitempty"`
}

// Meta is what every event of a session repeats.
type Meta struct {
	Agent    string `json:"agent"`
	Task     string `json:"task,omitempty"`
	Grant    string `json:"grant,omitempty"`
	Approver string `json:"approver,omitempty"`
	Access   string `json:"access,omitempty"`
	Resource string `json:"resource"`
	Protocol string `json:"protocol"`
	Client   string `json:"client"`
	// Gateway names the gateway instance that wrote the event.
	Gateway string `json:"gateway,omitempty"`
}

// Statement is one statement the client sent and what was decided about it.
// A message with several statements gives several events, Index 0..Count-1.
type Statement struct {
	// ID numbers the statement within its session (1, 2, ...); its result
	// event carries the same ID.
	ID       uint64 `json:"id"`
	Index    int    `json:"index"`
	Count    int    `json:"count"`
	Text     string `json:"text"`
	Decision string `json:"decision"` // allow or deny
	Rule     string `json:"rule"`
	Reason   string `json:"reason,omitempty"`

	Class authz.Classification `json:"class"`
	// Params are the bound parameters of a prepared statement's execution.
	Params []Param `json:"params,omitempty"`
}

// Param is one bound parameter as recorded: text as sent, binary as
// base64, cut to the configured cap, or redacted.
type Param struct {
	Value string `json:"value,omitempty"`
	// Format is "text" or "base64".
	Format    string `json:"format,omitempty"`
	Null      bool   `json:"null,omitempty"`
	Size      int    `json:"size,omitempty"` // bytes as sent
	Truncated bool   `json:"truncated,omitempty"`
	Redacted  bool   `json:"redacted,omitempty"`
}

// Result is what happened to an allowed statement.
type Result struct {
	// ID is the Statement.ID this result belongs to.
	ID uint64 `json:"id"`
	// Executed is false when the statement was allowed but never reached
	// the upstream (e.g. the recorder could not acknowledge it).
	Executed bool `json:"executed"`
	// Tag is the server's completion tag (e.g. "SELECT 3").
	Tag  string `json:"tag,omitempty"`
	Rows *int64 `json:"rows,omitempty"`
	// DurationUS is the time from forwarding to completion, microseconds.
	DurationUS int64  `json:"duration_us"`
	Error      string `json:"error,omitempty"`
	SQLState   string `json:"sqlstate,omitempty"`
}

// AuthFailure is a refused connection attempt.
type AuthFailure struct {
	User   string `json:"user"`
	Reason string `json:"reason"`
}

// End closes a session.
type End struct {
	Reason     string `json:"reason"`
	Statements int    `json:"statements"`
	Denied     int    `json:"denied"`
	DurationMS int64  `json:"duration_ms"`
}
