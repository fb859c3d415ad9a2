package notify

import (
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
)

// TestExpiredRequestIsNoExpiredGrant: the grant watcher announces an
// approved grant's expiry as grant.expired, never a request that expired
// waiting for a decision.
func TestExpiredRequestIsNoExpiredGrant(t *testing.T) {
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	req := &authz.Grant{ID: "gr_a", Agent: "agent-1", RequestedBy: "agent-1", State: authz.StatePending,
		RequestedAt: now.Add(-2 * time.Minute), RequestExpiresAt: now.Add(-time.Minute)}
	if req.EffectiveState(now) != authz.StateExpired {
		t.Fatal("the request does not read as expired")
	}
	fs := grantFacts(req, now)
	if len(fs) != 1 || fs[0].typ != RequestCreated {
		t.Errorf("facts of an expired request: %+v, want request.created only", fs)
	}
	granted := &authz.Grant{ID: "gr_b", Agent: "agent-1", RequestedBy: "agent-1", State: authz.StateActive,
		RequestedAt: now.Add(-3 * time.Minute), RequestExpiresAt: now.Add(24 * time.Hour),
		DecidedBy: "alice", DecidedAt: now.Add(-2 * time.Minute), ExpiresAt: now.Add(-time.Minute)}
	var got []string
	for _, f := range grantFacts(granted, now) {
		got = append(got, f.typ)
	}
	if len(got) != 3 || got[2] != GrantExpired {
		t.Errorf("facts of an expired grant: %v, want request.created, request.approved, grant.expired", got)
	}
}
