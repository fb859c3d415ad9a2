// Package authz is what every protocol's authorizer shares: grants, the
// policy that applies a grant to what a statement does (Decide), the
// decisions and their reasons, and the decision cache. It is pure:
// statement and grant in, decision out. It knows nothing of sockets, wire
// protocols, storage or any dialect: authz/postgres, authz/mysql and
// authz/ssh read their protocol's statements into what it decides on.
package authz

import (
	"fmt"
	"strings"
	"time"

	"github.com/airlockhq/airlock/credential"
)

// Access is what a database grant allows, ordered: read < write < ddl < admin.
type Access int

// The access levels, in increasing order. AccessNone is the zero value and
// allows nothing.
const (
	AccessNone Access = iota
	AccessRead
	AccessWrite
	AccessDDL
	AccessAdmin
)

var accessNames = [...]string{"none", "read", "write", "ddl", "admin"}

func (a Access) String() string {
	if a < 0 || int(a) >= len(accessNames) {
		return fmt.Sprintf("access(%d)", int(a))
	}
	return accessNames[a]
}

// ParseAccess reads one of read, write, ddl, admin.
func ParseAccess(s string) (Access, error) {
	for i, n := range accessNames {
		if i > 0 && strings.EqualFold(s, n) {
			return Access(i), nil
		}
	}
	return AccessNone, fmt.Errorf("unknown access level %q (want read, write, ddl or admin)", s)
}

// MarshalText encodes the level by name, so JSON carries "read", not 1.
func (a Access) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText is the inverse of MarshalText. Unlike ParseAccess it takes
// "none", which a recorded refusal may carry.
func (a *Access) UnmarshalText(b []byte) error {
	if string(b) == "none" {
		*a = AccessNone
		return nil
	}
	v, err := ParseAccess(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// State is where a grant is in its life.
type State string

// Grant states. A request is a grant in StatePending. StateExpired is never
// stored: it is what an active grant reads as once its expiry has passed,
// and what a pending request reads as once it has waited past its
// RequestExpiresAt without a decision.
const (
	StatePending State = "pending"
	StateActive  State = "active"
	StateDenied  State = "denied"
	StateRevoked State = "revoked"
	StateExpired State = "expired"
)

// Grant is one approved (or awaiting approval) task: which agent may reach
// which resource, for what, at what access level, until when.
type Grant struct {
	ID       string `json:"id"`
	Agent    string `json:"agent"`
	Resource string `json:"resource"`
	Task     string `json:"task"`
	Access   Access `json:"access"`

	State       State     `json:"state"`
	RequestedBy string    `json:"requested_by"`
	RequestedAt time.Time `json:"requested_at"`
	// RequestExpiresAt is when a pending request stops waiting for a
	// decision (RequestedAt + grants.request_ttl, fixed when it was filed, so
	// replicas and the CLI agree without the config). Zero on grants
	// created pre-approved and on requests stored before it existed: those
	// never expire while pending.
	RequestExpiresAt time.Time `json:"request_expires_at,omitzero"`
	// DecidedBy and DecidedAt name who approved or denied the request.
	DecidedBy string    `json:"decided_by,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	// Comment is what the approver wrote when deciding: a comment on an
	// approval (optional), the reason of a denial (required).
	Comment string `json:"comment,omitempty"`
	// Asked is what the request asked for, kept when the approver
	// granted less (a shorter TTL, fewer tables).
	Asked *Asked `json:"asked,omitempty"`
	// RevokedBy and RevokedAt are set when an active grant is revoked.
	RevokedBy string    `json:"revoked_by,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// TTL is how long the grant lasts once approved; ExpiresAt is set at
	// approval (or creation, for a pre-approved grant).
	TTL       Duration  `json:"ttl"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`

	// Database scope and guardrails; see Scope.
	Scope Scope `json:"scope,omitzero"`
	// SSH is what an SSH grant allows; nothing when empty.
	SSH SSHPolicy `json:"ssh,omitzero"`
	// Holds are the statements that wait for a person's approval inside
	// the session; nothing when empty.
	Holds Holds `json:"holds,omitzero"`

	// Verifier checks the grant's connection token. The token itself is
	// shown once, when the grant is created, and never stored.
	Verifier *credential.Verifier `json:"verifier,omitempty"`
}

// EffectiveState is the grant's state at now: an active grant past its
// expiry, or a pending request past its RequestExpiresAt, reads as expired.
func (g *Grant) EffectiveState(now time.Time) State {
	if g.State == StateActive && !g.ExpiresAt.IsZero() && !now.Before(g.ExpiresAt) {
		return StateExpired
	}
	if g.RequestExpired(now) {
		return StateExpired
	}
	return g.State
}

// RequestExpired says whether g is a request that waited past its
// RequestExpiresAt without a decision.
func (g *Grant) RequestExpired(now time.Time) bool {
	return g.State == StatePending && !g.RequestExpiresAt.IsZero() && !now.Before(g.RequestExpiresAt)
}

// ExpiredAt is when g reads as expired, or will: its ExpiresAt once
// approved, its RequestExpiresAt while it waits for a decision; zero when
// it never does. It reads the same on a copy whose State was made
// effective (expired).
func (g *Grant) ExpiredAt() time.Time {
	if g.ExpiresAt.IsZero() && (g.State == StatePending || g.State == StateExpired) {
		return g.RequestExpiresAt
	}
	return g.ExpiresAt
}

// Approver is who made the grant active: the approver of a request, or the
// creator of a pre-approved grant.
func (g *Grant) Approver() string { return g.DecidedBy }

// ApprovalComment is the approver's comment on an active grant's approval.
func (g *Grant) ApprovalComment() string {
	if g.State == StateDenied {
		return ""
	}
	return g.Comment
}

// Asked is what a request asked for before the approver narrowed it.
type Asked struct {
	TTL    Duration `json:"ttl"`
	Tables []string `json:"tables,omitempty"`
}

// Duration is a time.Duration that reads and writes as "1h30m" in JSON.
type Duration time.Duration

// MarshalText writes the duration as Go duration text.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads Go duration text such as "15m".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Scope narrows a database grant beyond its access level.
type Scope struct {
	// Tables the statements may read or write, as SCHEMA.TABLE (or
	// DATABASE.TABLE for MySQL) with * wildcards; empty means any. A name
	// without a schema names the session's default schema (public) or
	// current database. See docs/authorization.md.
	Tables []string `json:"tables,omitempty"`
	// Functions are extra functions allowed at read access, beyond the
	// built-in list of side-effect-free ones ([SCHEMA.]NAME, * wildcards).
	// Under a table scope they are also the functions trusted not to read
	// other tables. Admin functions stay admin.
	Functions []string `json:"functions,omitempty"`
	// AllowDrop lets DDL drop (DROP, TRUNCATE); refused by default.
	AllowDrop bool `json:"allow_drop,omitempty"`
	// AllowUnfiltered lets UPDATE and DELETE run without WHERE; refused by
	// default.
	AllowUnfiltered bool `json:"allow_unfiltered,omitempty"`
	// MaxTables refuses statements touching more tables; 0 means no limit.
	MaxTables int `json:"max_tables,omitempty"`
	// AllowFileLoad lets MySQL LOAD DATA LOCAL INFILE read client files.
	AllowFileLoad bool `json:"allow_file_load,omitempty"`
	// AllowServerFiles lets admin grants use server-side files and
	// programs (COPY ... TO/FROM 'file' or PROGRAM, pg_read_file and the
	// other file functions, LOAD DATA INFILE, SELECT ... INTO OUTFILE,
	// LOAD_FILE).
	AllowServerFiles bool `json:"allow_server_files,omitempty"`
}

// SSHPolicy is what an SSH grant allows. Nothing is allowed by default.
type SSHPolicy struct {
	// Commands are argv patterns with * wildcards per word, e.g.
	// "systemctl status *".
	Commands []string `json:"commands,omitempty"`
	// Shell allows an interactive shell (and its pty).
	Shell bool `json:"shell,omitempty"`
	// Files is "", "read" or "read-write": scp and sftp.
	Files string `json:"files,omitempty"`
	// Forwards are HOST:PORT destinations for port forwarding.
	Forwards []string `json:"forwards,omitempty"`
}

// IsZero reports whether the policy allows nothing (a database grant's).
func (p SSHPolicy) IsZero() bool {
	return len(p.Commands) == 0 && !p.Shell && p.Files == "" && len(p.Forwards) == 0
}

// Allows lists in words what the policy allows, one item per command
// pattern, the shell, file transfer and forward; nothing when it allows
// nothing.
func (p SSHPolicy) Allows() []string {
	var out []string
	for _, c := range p.Commands {
		out = append(out, "command: "+c)
	}
	if p.Shell {
		out = append(out, "interactive shell")
	}
	if p.Files != "" {
		out = append(out, "files: "+p.Files)
	}
	for _, f := range p.Forwards {
		out = append(out, "forward to "+f)
	}
	return out
}
