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
	return len(h.Kinds) == 0 && len(h.Tables) == 0 && !h.Denied
}

// Wait is how long a held statement waits for a person.
func (h Holds) Wait() time.Duration {
	if h.Timeout > 0 {
		return time.Duration(h.Timeout)
	}
	return DefaultHoldTimeout
}

// holdClasses are the Kinds that name a class of statements rather than
// one kind.
var holdClasses = map[string]bool{"DDL": true, "WRITE": true, "UNFILTERED": true}

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
)

// ApplyHolds marks the statements of v that g's holds match: an allowed
// statement a rule matches is held (Hold), and with Holds.Denied a
// statement refused by policy is held instead of refused. A message holds
// as a whole: it runs once every held statement of it is approved. It
// changes nothing when g holds nothing.
func ApplyHolds(g *Grant, v Verdict) Verdict {
	if g == nil || g.Holds.IsZero() {
		return v
	}
	out := Verdict{Allow: true, Statements: make([]Decision, len(v.Statements))}
	held := false
	for i, d := range v.Statements {
		switch {
		case d.Allow:
			if rule, why := g.Holds.match(d.Class); rule != "" {
				d.Hold, d.Rule, d.Reason = true, rule, why
			}
		case holdable(d) && (g.Holds.Denied || guardrail[d.Rule] && g.Holds.kindRule(d) != ""):
			// A guardrail's refusal (DROP, TRUNCATE, UPDATE or DELETE
			// without WHERE) waits instead when the grant holds that kind.
			d.Allow, d.Hold = true, true
			d.Reason = "held for an approver: the grant would refuse it (" + d.Rule + ": " + d.Reason + ")"
			d.Rule = RuleHoldDenied
		}
		held = held || d.Hold
		out.Allow = out.Allow && d.Allow
		out.Statements[i] = d
	}
	if !held {
		return v
	}
	if !out.Allow {
		// Something is still refused: the message is refused as a whole,
		// and nothing in it waits for anyone.
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

// guardrail are the rules whose refusals a Kinds rule can turn into holds.
var guardrail = map[string]bool{"drop": true, "unfiltered": true}

// kindRule is the Kinds rule that holds d, a statement a guardrail
// refused, or "".
func (h Holds) kindRule(d Decision) string {
	for _, k := range h.Kinds {
		k = strings.ToUpper(strings.TrimSpace(k))
		if k == "UNFILTERED" && d.Rule == "unfiltered" || !holdClasses[k] && globMatch(k, d.Class.Kind) || k == "DDL" && d.Class.Required >= AccessDDL || k == "WRITE" && d.Class.Required >= AccessWrite {
			return k
		}
	}
	return ""
}

// match is the rule that holds a statement of class c, and why, or "".
func (h Holds) match(c Classification) (rule, why string) {
	for _, k := range h.Kinds {
		k = strings.ToUpper(strings.TrimSpace(k))
		hit := false
		switch k {
		case "DDL":
			hit = c.Required >= AccessDDL
		case "WRITE":
			hit = c.Required >= AccessWrite
		case "UNFILTERED":
			// Refused by the unfiltered guardrail unless allowed; see
			// kindRule.
		default:
			hit = globMatch(k, c.Kind)
		}
		if hit {
			return RuleHoldKind, fmt.Sprintf("%s waits for an approver: the grant holds %s statements", c.Kind, k)
		}
	}
	for _, p := range h.Tables {
		p = strings.ToLower(strings.TrimSpace(p))
		for _, t := range c.TablesWritten {
			t = strings.ToLower(t)
			name := t
			if i := strings.LastIndexByte(t, '.'); i >= 0 {
				name = t[i+1:]
			}
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
