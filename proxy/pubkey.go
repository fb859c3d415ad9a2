package proxy

import (
	"context"
	"fmt"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/credential"
)

// Logins by public key, and logins decided over several attempts.
//
// An SSH client may try several methods and passwords on one connection
// before one works, and a public key names no grant. So the SSH listener
// probes during its handshake, without recording, and records the outcome
// once: Authenticate or AuthenticateKey when a method succeeds (they
// record session.start, or auth.failed if the grant changed meanwhile), or
// Refuse with the last reason when the handshake ends without one.

// ProbeToken reports which grant a token login (match tests a grant's
// verifier) would open a session under now, or why it would be refused.
// It records nothing.
func (c *Conn) ProbeToken(agent, resource string, match func(*credential.Verifier) bool) (*authz.Grant, *AuthError) {
	return c.findGrant(agent, resource, match)
}

// ProbeKey is ProbeToken for a login by a public key registered for the
// agent (the caller has checked the key). It records nothing.
func (c *Conn) ProbeKey(agent, resource string) (*authz.Grant, *AuthError) {
	return c.keyGrant(agent, resource)
}

// AuthenticateKey starts a session for an agent that proved it holds a
// public key registered for it. A key names no grant, so the session runs
// under the agent's active grant for resource, the most recently approved
// one if there are several (a token picks a specific grant). It records
// session.start, or auth.failed and returns an *AuthError.
func (c *Conn) AuthenticateKey(ctx context.Context, agent, resource string) (*Session, error) {
	g, aerr := c.keyGrant(agent, resource)
	if aerr != nil {
		c.Refuse(agent, resource, g, aerr)
		return nil, aerr
	}
	return c.start(ctx, g)
}

func (c *Conn) keyGrant(agent, resource string) (*authz.Grant, *AuthError) {
	if aerr := c.throttled(agent); aerr != nil {
		return nil, aerr
	}
	grants, aerr := c.agentGrants(agent, resource)
	if aerr != nil {
		return nil, aerr
	}
	now := c.srv.now()
	var best, latest *authz.Grant
	for _, g := range grants {
		if g.Resource != resource {
			continue
		}
		if g.EffectiveState(now) == authz.StateActive {
			if best == nil || g.DecidedAt.After(best.DecidedAt) {
				best = g
			}
			continue
		}
		if latest == nil || g.RequestedAt.After(latest.RequestedAt) {
			latest = g
		}
	}
	if best != nil {
		return best, nil
	}
	request := fmt.Sprintf("airlock request --resource %s --task \"...\"", resource)
	if latest == nil {
		return nil, &AuthError{"no-grant", fmt.Sprintf("authentication failed for %s: no grant for resource %s; request access with: %s", agent, resource, request)}
	}
	why := inactive(latest, now)
	return latest, &AuthError{why.Kind, fmt.Sprintf("authentication failed for %s: no active grant for resource %s (the latest: %s); request access with: %s", agent, resource, why.Msg, request)}
}
