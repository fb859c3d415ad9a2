// Package recorder writes the gateway's events to JetStream and reads them
// back. It knows sessions, statements and decisions, not wire protocols.
package recorder

import (
	"time"

	"github.com/airlockhq/airlock/authz"
)

// Version is the event format version written into every event. Version 2
// added the hash chain and signatures (Prev, Hash, Key, Sig); version 3
// signs by time rather than at every statement, and adds checkpoint
// events (see MustSign and docs/events.md); version 4 stores large values
// outside the event, in chunks the event references by SHA-256 (Ref,
// docs/events.md "Large values"). The verifier reads 2 to 4.
const Version = 4

// Event types.
const (
	TypeSessionStart    = "session.start"
	TypeStatement       = "statement"
	TypeStatementResult = "statement.result"
	TypeAuthFailed      = "auth.failed"
	TypeSessionEnd      = "session.end"
	// TypeData is a chunk of an SSH channel's data: terminal I/O of a
	// shell, output and input of an exec (up to a cap).
	TypeData = "data"
	// TypeCheckpoint carries nothing but a signature: the gateway appends
	// one when a session's unsigned events have waited SignInterval and
	// no later event was signed (format v3).
	TypeCheckpoint = "checkpoint"
	// TypeSessionInterrupted is a note that the gateway process writing
	// the session stopped without ending it, written by the gateway that
	// noticed (format v3; see Interruption and docs/recorder.md,
	// "Interrupted sessions"). It attaches to the session's last event
	// but is not part of its chain.
	TypeSessionInterrupted = "session.interrupted"
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
	// Prev is the Hash of the session's previous event ("" for seq 1),
	// Hash the hex SHA-256 of this event's canonical encoding (see
	// Canonical), Key the fingerprint of the gateway key that signed it
	// and Sig its ed25519 signature; events covered by a later signature
	// carry no Key or Sig (see Signed). Format v2.
	Prev string `json:"prev,omitempty"`
	Hash string `json:"hash,omitempty"`
	Key  string `json:"key,omitempty"`
	Sig  string `json:"sig,omitempty"`
	Meta

	Statement *Statement `json:"statement,omitempty"`
	// Result is the outcome a statement.result event carried (format v2).
	Result *Result `json:"result,omitempty"`
	// Results are the outcomes of the session's statements that completed
	// since its previous event (format v3): an outcome rides on the next
	// event the session writes, a statement, a data chunk, the end, or a
	// checkpoint when the session goes quiet. Read them with Outcomes.
	Results []Result     `json:"results,omitempty"`
	Auth    *AuthFailure `json:"auth,omitempty"`
	End     *End         `json:"end,omitempty"`
	Data    *Data        `json:"data,omitempty"`
	// Start is the body of a session.start: which gateway process writes
	// the session. Records written before it have none.
	Start *Start `json:"start,omitempty"`
	// Interrupted is the body of a session.interrupted note.
	Interrupted *Interruption `json:"interrupted,omitempty"`
	// BodyRef, when set, stands for the event's body (the members above
	// from Statement to Data), which was too large for one message even with
	// its statement's text and parameters in chunks: the body is stored in
	// chunks and the event carries none of those members (format v4).
	BodyRef *Ref `json:"body_ref,omitempty"`
}

// Ref stands in an event for a value stored outside it (format v4): its
// size and SHA-256, which the event's hash covers, so a chunk that is
// altered, missing or swapped fails verification. The value is stored as
// chunk messages on <prefix>.<session>.chunk (see docs/events.md).
type Ref struct {
	// Size is the value's length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 of the value's bytes.
	SHA256 string `json:"sha256"`
	// Omitted marks a value that is not in the record at all, only its
	// size and hash: the text of a statement refused for being larger
	// than recorder.max_statement_bytes.
	Omitted bool `json:"omitted,omitempty"`
}

// Outcomes are the statement outcomes ev carries: its Results (format v3)
// or the Result of a statement.result event (format v2).
func (ev *Event) Outcomes() []*Result {
	out := make([]*Result, 0, len(ev.Results)+1)
	if ev.Result != nil {
		out = append(out, ev.Result)
	}
	for i := range ev.Results {
		out = append(out, &ev.Results[i])
	}
	return out
}

// Meta is what every event of a session repeats.
type Meta struct {
	Agent    string `json:"agent"`
	Task     string `json:"task,omitempty"`
	Grant    string `json:"grant,omitempty"`
	Approver string `json:"approver,omitempty"`
	// ApprovalComment is what the approver wrote when approving the
	// grant, if anything.
	ApprovalComment string `json:"approval_comment,omitempty"`
	Access          string `json:"access,omitempty"`
	Resource        string `json:"resource"`
	Protocol        string `json:"protocol"`
	Client          string `json:"client"`
	// Gateway names the gateway instance that wrote the event.
	Gateway string `json:"gateway,omitempty"`
}

// Statement is one statement the client sent and what was decided about it.
// A message with several statements gives several events, Index 0..Count-1.
type Statement struct {
	// ID numbers the statement within its session (1, 2, ...); its result
	// event carries the same ID.
	ID    uint64 `json:"id"`
	Index int    `json:"index"`
	Count int    `json:"count"`
	Text  string `json:"text"`
	// TextRef, when set, references the whole text, and Text holds only
	// its first bytes (format v4): a text longer than the recorder keeps
	// in an event is stored in chunks, and one over the statement cap is
	// not stored (TextRef.Omitted).
	TextRef  *Ref   `json:"text_ref,omitempty"`
	Decision string `json:"decision"` // allow or deny
	Rule     string `json:"rule"`
	Reason   string `json:"reason,omitempty"`

	Class authz.Classification `json:"class"`
	// Params are the bound parameters of a prepared statement's execution.
	Params []Param `json:"params,omitempty"`
	// ParamsRef, when set, references Params stored in chunks (their JSON
	// array, as it would stand in the event), and Params is empty in the
	// stored event (format v4).
	ParamsRef *Ref `json:"params_ref,omitempty"`
}

// Param is one bound parameter as recorded: text as sent, binary as
// base64, cut to the configured cap, or redacted.
type Param struct {
	// Type is the parameter's wire type where the protocol sends one
	// (MySQL: "LONGLONG", "VAR_STRING", ...).
	Type  string `json:"type,omitempty"`
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
	// FileBytes is how many bytes of a client file the statement sent
	// upstream (MySQL LOAD DATA LOCAL INFILE).
	FileBytes int64 `json:"file_bytes,omitempty"`

	// SSH: how an exec, shell or subsystem ended (exit status, or the
	// signal that killed it), and the bytes its channel carried: In from
	// the agent (stdin, uploads), Out and Err to it (stdout, downloads;
	// stderr). OutputCapped is set when the channel's data was recorded
	// only up to recorder.max_output_bytes.
	ExitStatus   *int   `json:"exit_status,omitempty"`
	ExitSignal   string `json:"exit_signal,omitempty"`
	BytesIn      int64  `json:"bytes_in,omitempty"`
	BytesOut     int64  `json:"bytes_out,omitempty"`
	BytesErr     int64  `json:"bytes_err,omitempty"`
	OutputCapped bool   `json:"output_capped,omitempty"`

	// Stopped is set on the outcome of a statement that was still running
	// when its session's grant was revoked or expired: the ways airlock
	// asked the upstream to stop it, in order (see Stop.Methods). The rest
	// of the outcome (Error and SQLState, ExitSignal) is the server's own.
	Stopped []string `json:"stopped,omitempty"`
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

	// SSH: how the session's last exec, shell or subsystem channel to
	// close ended, as the agent's client was told: the exit status
	// (what `ssh host cmd` exits with; 126 when airlock refused the
	// request) or the signal that killed it. Neither when that channel
	// closed without one (e.g. the session was cut short), or the session
	// ran no command. Each channel's own is in its statement's result.
	ExitStatus *int   `json:"exit_status,omitempty"`
	ExitSignal string `json:"exit_signal,omitempty"`

	// Stop is set when the grant ended while statements were running:
	// what ran, how airlock stopped it and whether the stop was
	// confirmed.
	Stop *Stop `json:"stop,omitempty"`
}

// Stop is how airlock stopped the work that was running when a session's
// grant was revoked or expired (docs/events.md, session.end).
type Stop struct {
	// Running are the statements whose outcome was still to come.
	Running []Running `json:"running"`
	// Methods are the ways airlock asked the upstream to stop, in order:
	// "cancel", "terminate" (Postgres: a CancelRequest, then
	// pg_terminate_backend), "kill-query", "kill-connection" (MySQL),
	// "signal", "close" (SSH: a signal request, then closing the channel).
	Methods []string `json:"methods"`
	// Outcome is "stopped" when every running statement ended (each one's
	// result says how, in the server's words), or "unconfirmed" when one
	// had not ended when airlock gave up waiting and closed the upstream
	// connection.
	Outcome string `json:"outcome"`
	// Errors are the stop requests that could not be made, and why.
	Errors []string `json:"errors,omitempty"`
	// DurationMS is the time from the grant's end to the outcome.
	DurationMS int64 `json:"duration_ms"`
}

// Running is a statement that was running when its session was stopped.
type Running struct {
	ID uint64 `json:"id"`
	// Text is the statement's text, cut to 200 bytes.
	Text string `json:"text"`
}

// Stop outcomes.
const (
	StopStopped     = "stopped"
	StopUnconfirmed = "unconfirmed"
)

// Data is a chunk of an SSH channel's data, in the order it was relayed.
// The event's time is when the gateway relayed it, which is what a replay
// plays back.
type Data struct {
	// ID is the statement (exec, shell, subsystem) whose channel carried
	// the data.
	ID uint64 `json:"id"`
	// Stream is "stdout", "stderr" (to the agent), "stdin" (from the
	// agent), or "resize" (the terminal's size changed, or was set by the
	// pty request: Cols, Rows and, the first time, Term).
	Stream string `json:"stream"`
	// Text holds the bytes when they are valid UTF-8; B64 otherwise. A
	// chunk never splits a UTF-8 sequence that the next chunk completes.
	Text string `json:"text,omitempty"`
	B64  []byte `json:"b64,omitempty"`
	Cols int    `json:"cols,omitempty"`
	Rows int    `json:"rows,omitempty"`
	Term string `json:"term,omitempty"`
}

// Bytes returns the chunk's bytes, whichever field holds them.
func (d *Data) Bytes() []byte {
	if d.B64 != nil {
		return d.B64
	}
	return []byte(d.Text)
}

// Start says which gateway process writes a session.
type Start struct {
	// Instance is the id of the gateway process (gi_ and 16 letters),
	// under which it heartbeats while it lives; every start of the
	// gateway is a new instance.
	Instance string `json:"instance"`
}

// Interruption is a note that a session's gateway process stopped (a
// crash, a kill, a lost machine) without ending the session. The gateway
// that noticed writes it with seq LastSeq+1 and prev the hash of the
// event at LastSeq, signed with its own key, so it attests what the
// record held when it noticed; the session's chain does not link to it.
type Interruption struct {
	// Instance is the stopped process: the session's start.instance.
	Instance string `json:"instance"`
	// LastSeq is the session's last seq on record when it was noticed.
	LastSeq uint64 `json:"last_seq"`
	// By is the instance of the gateway process that noticed; the
	// event's gateway field names its host.
	By string `json:"by"`
	// Reason says how the stop was noticed.
	Reason string `json:"reason"`
}
