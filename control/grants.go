package control

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/airlockhq/airlock/authz"
	sshauthz "github.com/airlockhq/airlock/authz/ssh"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/credential"
)

// GrantSpec is what an agent asks for, or what an approver grants directly.
type GrantSpec struct {
	Agent    string `json:"agent,omitempty"`
	Resource string `json:"resource"`
	Task     string `json:"task"`
	Access   string `json:"access,omitempty"`
	// TTL is Go duration text ("30m"); empty means the configured default.
	TTL string `json:"ttl,omitempty"`
	// Scope narrows a database grant; SSH says what an SSH grant allows.
	Scope authz.Scope     `json:"scope,omitzero"`
	SSH   authz.SSHPolicy `json:"ssh,omitzero"`
	// Holds are the statements that wait for an approver in the session.
	Holds authz.Holds `json:"holds,omitzero"`
}

// Issued is a new grant with its connection token, which is shown only
// here and never stored.
type Issued struct {
	Grant *authz.Grant `json:"grant"`
	Token string       `json:"token"`
}

// Service applies the grant life-cycle rules on top of a Store.
type Service struct {
	Store  *Store
	Config *config.Config
	Now    func() time.Time
	// Notify is told of requests filed and decided and grants revoked;
	// nil: nobody is. It must not block.
	Notify GrantNotifier
	// Holds keeps statements held for an approver (/v1/holds); nil: the
	// gateway could not open its bucket, and the routes answer 503.
	Holds *HoldStore
}

// GrantNotifier hears of grant changes worth telling people about: the
// notification types request.created, request.approved, request.denied
// and grant.revoked. notify.Notifier is one.
type GrantNotifier interface {
	Grant(typ string, g *authz.Grant)
}

func (s *Service) notify(typ string, g *authz.Grant) {
	if s.Notify != nil && g != nil {
		s.Notify.Grant(typ, g)
	}
}

// UserError is a refusal whose text is meant for the caller.
type UserError struct {
	Status int // HTTP status
	Msg    string
}

func (e *UserError) Error() string { return e.Msg }

func userErr(status int, format string, args ...any) error {
	return &UserError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now().UTC()
}

// newGrant validates spec and builds a grant in state pending, with a fresh
// token.
func (s *Service) newGrant(spec GrantSpec, by string) (*authz.Grant, string, error) {
	id := s.Config.Identity(spec.Agent)
	if id == nil || id.Role != config.RoleAgent {
		return nil, "", userErr(400, "agent %q is not an identity with role agent in the gateway config", spec.Agent)
	}
	res := s.Config.Resource(spec.Resource)
	if res == nil {
		return nil, "", userErr(400, "%s", UnknownResource(s.Config, spec.Resource))
	}
	task := strings.TrimSpace(spec.Task)
	if task == "" {
		return nil, "", userErr(400, "a task is required: say what the access is for (e.g. a ticket and a sentence)")
	}
	if len(task) > 1000 {
		return nil, "", userErr(400, "the task is longer than 1000 characters")
	}
	access := authz.AccessRead
	if spec.Access != "" {
		a, err := authz.ParseAccess(spec.Access)
		if err != nil {
			return nil, "", userErr(400, "%v", err)
		}
		access = a
	}
	ttl := s.Config.Grants.DefaultTTL
	if spec.TTL != "" {
		d, err := time.ParseDuration(spec.TTL)
		if err != nil || d <= 0 {
			return nil, "", userErr(400, "ttl %q is not a positive duration such as 30m or 2h", spec.TTL)
		}
		ttl = d
	}
	if ttl > s.Config.Grants.MaxTTL {
		return nil, "", userErr(400, "ttl %s is longer than the gateway's maximum %s", ttl, s.Config.Grants.MaxTTL)
	}
	if err := checkShape(res.Protocol, spec); err != nil {
		return nil, "", err
	}
	token := credential.NewToken()
	g := &authz.Grant{
		ID:          newID("gr_"),
		Agent:       spec.Agent,
		Resource:    res.Name,
		Task:        task,
		Access:      access,
		State:       authz.StatePending,
		RequestedBy: by,
		RequestedAt: s.now(),
		TTL:         authz.Duration(ttl),
		Scope:       spec.Scope,
		SSH:         spec.SSH,
		Holds:       spec.Holds,
		Verifier:    credential.NewVerifier(spec.Agent, token),
	}
	return g, token, nil
}

// Request files an agent's request: a pending grant.
func (s *Service) Request(ctx context.Context, agent string, spec GrantSpec) (*Issued, error) {
	spec.Agent = agent
	g, token, err := s.newGrant(spec, agent)
	if err != nil {
		return nil, err
	}
	g.RequestExpiresAt = g.RequestedAt.Add(s.requestTTL())
	if err := s.Store.Create(ctx, g); err != nil {
		return nil, err
	}
	s.notify("request.created", g)
	return &Issued{Grant: g, Token: token}, nil
}

// requestTTL is how long a new request waits for a decision.
func (s *Service) requestTTL() time.Duration {
	if d := s.Config.Grants.RequestTTL; d > 0 {
		return d
	}
	return config.DefaultRequestTTL
}

// CreateActive makes a pre-approved grant on an approver's word.
func (s *Service) CreateActive(ctx context.Context, approver string, spec GrantSpec) (*Issued, error) {
	g, token, err := s.newGrant(spec, approver)
	if err != nil {
		return nil, err
	}
	now := s.now()
	g.State = authz.StateActive
	g.DecidedBy, g.DecidedAt = approver, now
	g.ExpiresAt = now.Add(time.Duration(g.TTL))
	if err := s.Store.Create(ctx, g); err != nil {
		return nil, err
	}
	return &Issued{Grant: g, Token: token}, nil
}

// DecideOptions are what an approver may add to a decision.
type DecideOptions struct {
	// Comment is kept on the grant and, for an approval, carried by every
	// event of its sessions; for a denial it is the reason, required.
	Comment string `json:"comment,omitempty"`
	// TTL, when set, approves for less than was asked (Go duration text).
	TTL string `json:"ttl,omitempty"`
	// Tables, when set, approves fewer tables than were asked for.
	Tables []string `json:"tables,omitempty"`
}

// maxComment bounds a decision's comment, as the task is bounded.
const maxComment = 1000

// Decide applies action (approve, deny or revoke) by who.
func (s *Service) Decide(ctx context.Context, id, action, who string) (*authz.Grant, error) {
	return s.DecideWith(ctx, id, action, who, DecideOptions{})
}

// DecideWith is Decide with a comment and, for an approval, a narrower
// grant than was asked for. It never widens: a longer TTL or a table not
// asked for is refused, and so is a denial without a reason.
func (s *Service) DecideWith(ctx context.Context, id, action, who string, o DecideOptions) (*authz.Grant, error) {
	o.Comment = strings.TrimSpace(o.Comment)
	if len(o.Comment) > maxComment {
		return nil, userErr(400, "the comment is longer than %d characters", maxComment)
	}
	if action == "deny" && o.Comment == "" {
		return nil, userErr(400, "a denial needs a reason (--reason): the agent is told why")
	}
	if action != "approve" && (o.TTL != "" || len(o.Tables) > 0) {
		return nil, userErr(400, "--ttl and --table narrow an approval; they do not apply to %s", action)
	}
	var ttl time.Duration
	if o.TTL != "" {
		d, err := time.ParseDuration(o.TTL)
		if err != nil || d <= 0 {
			return nil, userErr(400, "ttl %q is not a positive duration such as 30m or 2h", o.TTL)
		}
		ttl = d
	}
	g, err := s.Store.Update(ctx, id, func(g *authz.Grant) error {
		now := s.now()
		state := g.EffectiveState(now)
		switch action {
		case "approve", "deny":
			if g.RequestExpired(now) {
				return userErr(409, "request %s expired at %s without a decision; it can no longer be %s: the agent must request again",
					g.ID, g.RequestExpiresAt.UTC().Format(time.RFC3339), pastTense(action))
			}
			if g.State != authz.StatePending {
				return userErr(409, "grant %s is %s, not pending; only a pending request can be %s", g.ID, state, pastTense(action))
			}
			if action == "approve" {
				if err := narrow(g, ttl, o.Tables); err != nil {
					return err
				}
			}
			g.DecidedBy, g.DecidedAt, g.Comment = who, now, o.Comment
			if action == "deny" {
				g.State = authz.StateDenied
				return nil
			}
			g.State = authz.StateActive
			g.ExpiresAt = now.Add(time.Duration(g.TTL))
		case "revoke":
			if g.State != authz.StateActive {
				return userErr(409, "grant %s is %s; only an active grant can be revoked (deny a pending request instead)", g.ID, state)
			}
			g.State = authz.StateRevoked
			g.RevokedBy, g.RevokedAt = who, now
		default:
			return userErr(400, "unknown action %q (approve, deny or revoke)", action)
		}
		return nil
	})
	if errors.Is(err, ErrNoGrant) {
		return nil, userErr(404, "no grant %s", id)
	}
	if err == nil {
		switch action {
		case "approve":
			s.notify("request.approved", g)
		case "deny":
			s.notify("request.denied", g)
		case "revoke":
			s.notify("grant.revoked", g)
		}
	}
	return g, err
}

// narrow applies an approver's shorter TTL and fewer tables to g,
// keeping what was asked in g.Asked. A request for any table may be
// narrowed to some; a request naming tables only to some of those names.
func narrow(g *authz.Grant, ttl time.Duration, tables []string) error {
	if ttl == 0 && len(tables) == 0 {
		return nil
	}
	asked := &authz.Asked{TTL: g.TTL, Tables: g.Scope.Tables}
	if ttl > time.Duration(g.TTL) {
		return userErr(400, "ttl %s is longer than the %s asked for; an approval may only narrow a request", ttl, time.Duration(g.TTL))
	}
	if len(tables) > 0 {
		if !g.SSH.IsZero() {
			return userErr(400, "--table narrows database grants; %s is an ssh grant", g.ID)
		}
		seen := map[string]bool{}
		var keep []string
		for _, t := range tables {
			t = strings.TrimSpace(t)
			if t == "" || seen[t] {
				continue
			}
			if strings.Count(t, ".") > 1 {
				return userErr(400, "--table %q: want SCHEMA.TABLE or TABLE, with * wildcards", t)
			}
			if len(g.Scope.Tables) > 0 && !slices.Contains(g.Scope.Tables, t) {
				return userErr(400, "table %q was not asked for (asked: %s); an approval may only narrow a request", t, strings.Join(g.Scope.Tables, ", "))
			}
			seen[t] = true
			keep = append(keep, t)
		}
		if len(keep) > 0 {
			g.Scope.Tables = keep
		}
	}
	if ttl > 0 {
		g.TTL = authz.Duration(ttl)
	}
	if time.Duration(asked.TTL) != time.Duration(g.TTL) || !slices.Equal(asked.Tables, g.Scope.Tables) {
		g.Asked = asked
	}
	return nil
}

// checkShape refuses options that do not fit the resource's protocol.
func checkShape(protocol string, spec GrantSpec) error {
	ssh := spec.SSH
	hasSSH := !ssh.IsZero()
	if protocol != "ssh" && hasSSH {
		return userErr(400, "--command, --shell, --files and --forward are for ssh resources; this one is %s", protocol)
	}
	if protocol == "ssh" {
		if spec.Access != "" && spec.Access != "read" {
			return userErr(400, "--access is for database resources; for ssh say --command, --shell, --files or --forward")
		}
		if len(spec.Scope.Tables) > 0 || len(spec.Scope.Functions) > 0 {
			return userErr(400, "--table and --function are for database resources")
		}
		if !hasSSH {
			return userErr(400, "an ssh grant allows nothing by default: say --command PATTERN, --shell, --files read|read-write or --forward HOST:PORT")
		}
	}
	switch ssh.Files {
	case "", "read", "read-write":
	default:
		return userErr(400, "--files %q: want read or read-write", ssh.Files)
	}
	for _, f := range ssh.Forwards {
		if _, port, err := net.SplitHostPort(f); err != nil || port == "" {
			return userErr(400, "--forward %q: want HOST:PORT", f)
		}
	}
	for _, c := range ssh.Commands {
		if err := sshauthz.CheckCommandPattern(c); err != nil {
			return userErr(400, "--command %q: %v", c, err)
		}
	}
	if protocol != "ssh" && len(spec.Holds.Commands) > 0 {
		return userErr(400, "--hold-command is for ssh resources; this one is %s", protocol)
	}
	for _, c := range spec.Holds.Commands {
		if err := sshauthz.CheckCommandPattern(c); err != nil {
			return userErr(400, "--hold-command %q: %v", c, err)
		}
	}
	if spec.Scope.MaxTables < 0 {
		return userErr(400, "--max-tables must be positive")
	}
	if err := spec.Holds.Check(); err != nil {
		return userErr(400, "%v", err)
	}
	for _, t := range spec.Scope.Tables {
		if strings.TrimSpace(t) == "" || strings.Count(t, ".") > 1 {
			return userErr(400, "--table %q: want SCHEMA.TABLE or TABLE, with * wildcards", t)
		}
	}
	return nil
}

func pastTense(action string) string {
	if action == "deny" {
		return "denied"
	}
	return action + "d"
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns prefix and 80 random bits, safe in a NATS subject token and
// a KV key.
func newID(prefix string) string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("control: no randomness: " + err.Error())
	}
	return prefix + idEncoding.EncodeToString(b[:])
}
