package authz

import (
	"fmt"
	"strings"
	"time"
)

// Holds are a grant's third answer next to allow and deny: a statement they
// match waits, inside its live session, for a person to approve or deny it
// (see docs/authorization.md, "Holds"). They apply to what the grant
// allows, and with Denied to what it would otherwise refuse by policy, so
// an approver can let one exception through.
type Holds struct {
	// Kinds are statement kinds that wait ("DELETE", "TRUNCATE", "DROP
	// TABLE", "GRANT", upper case, * wildcards), and three classes: "DDL"
	// (any statement that needs ddl access), "WRITE" (any that needs write
	// access or more) and "UNFILTERED" (UPDATE or DELETE without WHERE).
	Kinds []string `json:"kinds,omitempty"`
	// Tables: a statement that writes one of these tables (TABLE or
	// SCHEMA.TABLE, * wildcards) waits.
	Tables []string `json:"tables,omitempty"`
	// Commands: an SSH exec command one of these patterns matches waits
	// (the syntax of SSHPolicy.Commands, but a * here also stands for an
	// option or a .. path element: a hold errs towards asking). The SSH
	// authorizer applies them, as it reads commands.
	Commands []string `json:"commands,omitempty"`
	// Denied: a statement the grant's policy would refuse waits instead
	// (not one the parser cannot read, nor one refused because the grant
	// is no longer active).
	Denied bool `json:"denied,omitempty"`
	// Timeout is how long a held statement waits before it is refused;
	// zero means DefaultHoldTimeout.
	Timeout Duration `json:"timeout,omitempty"`
}

// DefaultHoldTimeout is how long a held statement waits when the grant
// does not say.
const DefaultHoldTimeout = 5 * time.Minute

// IsZero reports whether the grant holds nothing.
func (h Holds) IsZero() bool {
	return len(h.Kinds) == 0 && len(h.Tables) == 0 && len(h.Commands) == 0 && !h.Denied
}

// Wait is how long a held statement waits for a person.
func (h Holds) Wait() time.Duration {
	if h.Timeout > 0 {
		return time.Duration(h.Timeout)
	}
	return DefaultHoldTimeout
}

// Check says what is wrong with the rules, or nil.
func (h Holds) Check() error {
	for _, k := range h.Kinds {
		if strings.TrimSpace(k) == "" {
			return fmt.Errorf("holds.kinds: an empty kind")
		}
	}
	for _, t := range h.Tables {
		if strings.TrimSpace(t) == "" {
			return fmt.Errorf("holds.tables: an empty table")
		}
	}
	for _, c := range h.Commands {
		if strings.TrimSpace(c) == "" {
			return fmt.Errorf("holds.commands: an empty command pattern")
		}
	}
	if h.Timeout < 0 {
		return fmt.Errorf("holds.timeout: negative")
	}
	return nil
}

// Rules that hold a statement, Decision.Rule of a held one.
const (
	RuleHoldKind   = "hold-kind"
	RuleHoldTable  = "hold-table"
	RuleHoldDenied = "hold-denied"
	// RuleHoldCommand holds an SSH command (Holds.Commands), set by the
	// SSH authorizer.
	RuleHoldCommand = "hold-command"
)

// ApplyHolds marks the statements of v that g's holds match: an allowed
// statement a rule matches is held (Hold), and a statement refused by
// policy is held instead when the grant holds what it would refuse
// (Holds.Denied) or it is a guardrail's refusal of a kind the grant holds.
// A message holds as a whole: it runs once every held statement of it is
// approved, and a message with a statement still refused is refused, with
// nothing in it held. It changes nothing when g holds nothing. (An SSH
// command that Holds.Commands match comes already held from the SSH
// authorizer, which reads the command's words.)
func ApplyHolds(g *Grant, v Verdict) Verdict {
	if g == nil || g.Holds.IsZero() {
		return v
	}
	out := Verdict{Allow: true, Statements: make([]Decision, len(v.Statements))}
	for i, d := range v.Statements {
		switch {
		case d.Allow:
			if rule, why := g.Holds.match(d); rule != "" {
				d.Hold, d.Rule, d.Reason = true, rule, why
			}
		case holdable(d) && (g.Holds.Denied || guardrail[d.Rule] && g.Holds.kind(d) != ""):
			d.Allow, d.Hold = true, true
			d.Reason = "held for an approver: the grant would refuse it (" + d.Rule + ": " + d.Reason + ")"
			d.Rule = RuleHoldDenied
		}
		out.Allow = out.Allow && d.Allow
		out.Statements[i] = d
	}
	if !out.Allow || !out.Held() {
		return v
	}
	return out
}

// Held reports whether a statement of v waits for a person.
func (v Verdict) Held() bool {
	for _, d := range v.Statements {
		if d.Hold {
			return true
		}
	}
	return false
}

// holdable: refusals a person may overrule. Not what the parser cannot
// read (nobody knows what it does), nor the grant's state, nor a
// malformed message.
func holdable(d Decision) bool {
	switch {
	case d.Syntax != nil, d.Rule == "unparseable", d.Rule == "batch", d.Rule == "protocol", d.Rule == "too-large":
		return false
	case strings.HasPrefix(d.Rule, "grant-"):
		return false
	}
	return true
}

// guardrail are the rules whose refusals a Kinds rule turns into holds:
// DROP and TRUNCATE without --allow-drop, UPDATE and DELETE without WHERE.
var guardrail = map[string]bool{"drop": true, "unfiltered": true}

// kind is the Kinds entry that holds d, or "": a statement kind (with *
// wildcards), or a class: DDL and WRITE by the access d needs, UNFILTERED
// by the guardrail that refused it.
func (h Holds) kind(d Decision) string {
	for _, k := range h.Kinds {
		k = strings.ToUpper(strings.TrimSpace(k))
		var hit bool
		switch k {
		case "DDL":
			hit = d.Class.Required >= AccessDDL
		case "WRITE":
			hit = d.Class.Required >= AccessWrite
		case "UNFILTERED":
			hit = d.Rule == "unfiltered"
		default:
			hit = globMatch(k, d.Class.Kind)
		}
		if hit {
			return k
		}
	}
	return ""
}

// match is the rule that holds d, an allowed statement, and why, or "".
func (h Holds) match(d Decision) (rule, why string) {
	c := d.Class
	if k := h.kind(d); k != "" {
		return RuleHoldKind, fmt.Sprintf("%s waits for an approver: the grant holds %s statements", c.Kind, k)
	}
	for _, p := range h.Tables {
		p = strings.ToLower(strings.TrimSpace(p))
		for _, t := range c.TablesWritten {
			t = strings.ToLower(t)
			name := t[strings.LastIndexByte(t, '.')+1:]
			if globMatch(p, t) || !strings.Contains(p, ".") && globMatch(p, name) {
				return RuleHoldTable, fmt.Sprintf("%s writes %s, which the grant holds for an approver", c.Kind, t)
			}
		}
	}
	return "", ""
}

// HoldState is where a held statement is in its life.
type HoldState string

// Hold states: pending until a person decides or it times out; the session
// that holds it cancels it when its client gives up (a cancel request,
// KILL QUERY, ctrl-C) or the session ends.
const (
	HoldPending   HoldState = "pending"
	HoldApproved  HoldState = "approved"
	HoldDenied    HoldState = "denied"
	HoldExpired   HoldState = "expired"
	HoldCancelled HoldState = "cancelled"
)

// Hold is one client message waiting for a person: what it would run,
// where, and, once decided, who decided and why.
type Hold struct {
	ID       string `json:"id"`
	Session  string `json:"session"`
	Grant    string `json:"grant"`
	Agent    string `json:"agent"`
	Resource string `json:"resource"`
	Task     string `json:"task"`
	// Statements are the message's statements, each with the rule that
	// holds it (or why the others need nothing).
	Statements []HeldStatement `json:"statements"`
	// Before are the session's latest statements before this one, oldest
	// first, for the approver's context.
	Before    []string  `json:"before,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	State     HoldState `json:"state"`
	DecidedBy string    `json:"decided_by,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	// Comment is the approver's comment, or the reason of a denial
	// (required), or why it expired or was cancelled.
	Comment string `json:"comment,omitempty"`
}

// HeldStatement is one statement of a held message.
type HeldStatement struct {
	Text   string   `json:"text"`
	Kind   string   `json:"kind"`
	Hold   bool     `json:"hold"`
	Rule   string   `json:"rule,omitempty"`
	Reason string   `json:"reason,omitempty"`
	Params []string `json:"params,omitempty"`
}
