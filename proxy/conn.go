package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/credential"
	"github.com/airlockhq/airlock/recorder"
)

// Conn is one accepted client connection, before and after it becomes a
// session.
type Conn struct {
	net.Conn
	// ID is the session id, assigned at accept so that even a refused
	// attempt has one in the record.
	ID     string
	Proto  string
	Remote string

	srv   *Server
	log   *slog.Logger
	stall *stallConn
}

// Logger returns the connection's logger, carrying session, proto and
// remote.
func (c *Conn) Logger() *slog.Logger { return c.log }

// AuthError is a refused login. Msg is written for the agent.
type AuthError struct {
	// Kind is a stable word: no-agent, bad-token, wrong-resource, pending,
	// denied, revoked, expired, unavailable, protocol, throttled.
	Kind string
	Msg  string
}

func (e *AuthError) Error() string { return e.Msg }

// Authenticate finds which of agent's grants the client's proof belongs to
// (match tests one grant's verifier), checks that the grant may open a
// session to resource now, records the session's start and returns the
// session. Any refusal is recorded as auth.failed and returned as an
// *AuthError.
func (c *Conn) Authenticate(ctx context.Context, agent, resource string, match func(*credential.Verifier) bool) (*Session, error) {
	g, aerr := c.findGrant(agent, resource, match)
	if aerr != nil {
		c.Refuse(agent, resource, g, aerr)
		return nil, aerr
	}
	return c.start(ctx, g)
}

func (c *Conn) findGrant(agent, resource string, match func(*credential.Verifier) bool) (*authz.Grant, *AuthError) {
	if aerr := c.throttled(agent); aerr != nil {
		return nil, aerr
	}
	grants, aerr := c.agentGrants(agent, resource)
	if aerr != nil {
		if aerr.Kind == "no-agent" || aerr.Kind == "no-resource" {
			c.loginFailed(c.knownAgent(agent))
		}
		return nil, aerr
	}
	var g *authz.Grant
	for _, cand := range grants {
		if cand.Verifier != nil && match(cand.Verifier) {
			g = cand
			break
		}
	}
	if g == nil {
		c.loginFailed(agent)
		return nil, &AuthError{"bad-token", fmt.Sprintf("authentication failed for %s: the password is not the token of any of your grants; request access with: airlock request --resource %s --task \"...\"", agent, resource)}
	}
	if g.Resource != resource {
		return g, &AuthError{"wrong-resource", fmt.Sprintf("grant %s is for resource %s, not %s", g.ID, g.Resource, resource)}
	}
	return g, inactive(g, c.srv.now())
}

// knownAgent is agent when it names an agent of this gateway, else "".
func (c *Conn) knownAgent(agent string) string {
	if id := c.srv.Config.Identity(agent); id != nil && id.Role == "agent" {
		return agent
	}
	return ""
}

// agentGrants are agent's grants, once agent is an agent this gateway
// knows and resource one of its resources.
func (c *Conn) agentGrants(agent, resource string) ([]*authz.Grant, *AuthError) {
	srv := c.srv
	id := srv.Config.Identity(agent)
	if id == nil || id.Role != "agent" {
		return nil, &AuthError{"no-agent", fmt.Sprintf("authentication failed: %q is not an agent known to this gateway", agent)}
	}
	if srv.Config.Resource(resource) == nil {
		return nil, &AuthError{"no-resource", fmt.Sprintf("authentication failed: no resource %q on this gateway (airlock resources lists them)", resource)}
	}
	grants, err := srv.Grants.ForAgent(agent)
	if err != nil {
		return nil, &AuthError{"unavailable", "the gateway cannot confirm grants right now (control plane unavailable); try again shortly"}
	}
	return grants, nil
}

// inactive says why grant g cannot open a session at now; nil when it is
// active.
func inactive(g *authz.Grant, now time.Time) *AuthError {
	switch state := g.EffectiveState(now); state {
	case authz.StateActive:
		return nil
	case authz.StatePending:
		return &AuthError{"pending", fmt.Sprintf("grant %s pending approval: an approver must run: airlock grants approve %s", g.ID, g.ID)}
	case authz.StateDenied:
		return &AuthError{"denied", fmt.Sprintf("grant %s was denied by %s", g.ID, g.DecidedBy)}
	case authz.StateRevoked:
		return &AuthError{"revoked", fmt.Sprintf("grant %s was revoked by %s at %s", g.ID, g.RevokedBy, g.RevokedAt.UTC().Format(time.RFC3339))}
	case authz.StateExpired:
		if g.State == authz.StatePending {
			return &AuthError{"expired", fmt.Sprintf("request %s expired at %s without a decision; request again", g.ID, g.RequestExpiresAt.UTC().Format(time.RFC3339))}
		}
		return &AuthError{"expired", fmt.Sprintf("grant %s expired at %s; request a new one", g.ID, g.ExpiresAt.UTC().Format(time.RFC3339))}
	default:
		return &AuthError{"bad-state", fmt.Sprintf("grant %s is in state %q", g.ID, state)}
	}
}

// Refuse records a refused connection attempt. g is the grant the client
// proved it holds, if any.
func (c *Conn) Refuse(user, resource string, g *authz.Grant, why *AuthError) {
	meta := c.meta(user, resource, g)
	log := c.srv.Recorder.Open(c.ID, meta)
	log.Append(recorder.Event{Type: recorder.TypeAuthFailed, Auth: &recorder.AuthFailure{User: user, Reason: why.Kind + ": " + why.Msg}})
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.publishTimeout())
	defer cancel()
	if err := log.Commit(ctx); err != nil {
		c.log.Error("auth failure not recorded", "err", err)
	}
	c.srv.Observer.AuthFailed(c.Proto, why.Kind)
	c.log.Info("login refused", "agent", user, "resource", resource, "why", why.Kind)
}

func (c *Conn) meta(agent, resource string, g *authz.Grant) recorder.Meta {
	m := recorder.Meta{Agent: agent, Resource: resource, Protocol: c.Proto, Client: c.Remote, Gateway: c.srv.Gateway}
	if g != nil {
		m.Task, m.Grant, m.Approver, m.Access = g.Task, g.ID, g.Approver(), g.Access.String()
		m.ApprovalComment = g.ApprovalComment()
	}
	return m
}

// start opens the session's event log and records its start; nothing is
// connected upstream before that start is acknowledged.
func (c *Conn) start(ctx context.Context, g *authz.Grant) (*Session, error) {
	srv := c.srv
	sctx, cancel := context.WithCancelCause(ctx)
	ss := &Session{
		ID:       c.ID,
		conn:     c,
		srv:      srv,
		ctx:      sctx,
		cancel:   cancel,
		grantID:  g.ID,
		grant:    g,
		resource: srv.Config.Resource(g.Resource),
		started:  srv.now(),
		log:      c.log.With("agent", g.Agent, "resource", g.Resource, "grant", g.ID),
	}
	ss.events = srv.Recorder.Open(c.ID, c.meta(g.Agent, g.Resource, g))
	ss.events.Append(recorder.Event{Type: recorder.TypeSessionStart})
	cctx, ccancel := context.WithTimeout(ctx, srv.publishTimeout())
	defer ccancel()
	if err := ss.events.Commit(cctx); err != nil {
		cancel(err)
		ss.log.Error("session start not recorded; refusing the session", "err", err)
		return nil, &AuthError{"recorder", "recording unavailable; session not started (nothing runs unrecorded)"}
	}
	srv.track(ss)
	srv.throttle.succeeded(sourceKey(c.Remote))
	srv.Observer.SessionStarted(c.Proto)
	ss.watchExpiry()
	// The grant may have changed between lookup and tracking.
	if cur, err := srv.Grants.ForAgent(g.Agent); err == nil {
		for _, x := range cur {
			if x.ID == g.ID {
				ss.setGrant(x)
			}
		}
	}
	ss.log.Info("session started")
	return ss, nil
}

func (s *Server) publishTimeout() time.Duration {
	if d := s.Config.Recorder.PublishTimeout; d > 0 {
		return d
	}
	return 2 * time.Second
}

// errAs is errors.As for *AuthError, for protocols mapping errors to codes.
func AsAuthError(err error) (*AuthError, bool) {
	var ae *AuthError
	ok := errors.As(err, &ae)
	return ae, ok
}
