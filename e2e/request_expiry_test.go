package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/control"
)

// TestRequestExpiry: with grants.request_ttl 4s, a request filed by the
// CLI that nobody decides expires: `airlock grants approve` and `deny` are
// refused saying the agent must request again, `grants list` shows it
// expired, and its token opens no session. A request approved in time is
// an ordinary grant.
func TestRequestExpiry(t *testing.T) {
	g := startGateway(t, gatewayOptions{Config: "grants:\n  request_ttl: 4s\n"})

	out := g.MustCLI("agent-1", "request", "--resource", "demo-pg", "--task", "INC-77 stale request")
	if !strings.Contains(out, "expires:") || !strings.Contains(out, "unless approved or denied") {
		t.Errorf("request output does not say when it expires:\n%s", out)
	}
	var stale control.Issued
	g.CLIJSON(&stale, "agent-1", "request", "--resource", "demo-pg", "--task", "INC-78 stale request")
	id := stale.Grant.ID
	if stale.Grant.State != authz.StatePending || stale.Grant.RequestExpiresAt.IsZero() {
		t.Fatalf("request: %+v", stale.Grant)
	}
	if d := stale.Grant.RequestExpiresAt.Sub(stale.Grant.RequestedAt); d != 4*time.Second {
		t.Errorf("request_expires_at is %s after requested_at, want 4s", d)
	}
	var fresh control.Issued
	g.CLIJSON(&fresh, "agent-1", "request", "--resource", "demo-pg", "--task", "INC-79 decided in time")
	g.MustCLI("alice", "grants", "approve", fresh.Grant.ID)

	time.Sleep(time.Until(stale.Grant.RequestExpiresAt) + 500*time.Millisecond)

	_, err := g.CLI("alice", "grants", "approve", id)
	want := "request " + id + " expired at " + stale.Grant.RequestExpiresAt.UTC().Format(time.RFC3339)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "the agent must request again") {
		t.Fatalf("approving an expired request: %v, want %q ... the agent must request again", err, want)
	}
	if _, err := g.CLI("alice", "grants", "deny", id, "--reason", "late"); err == nil || !strings.Contains(err.Error(), "the agent must request again") {
		t.Errorf("denying an expired request: %v", err)
	}

	list := g.MustCLI("alice", "grants", "list")
	var row, freshRow string
	for _, l := range strings.Split(list, "\n") {
		if strings.HasPrefix(l, id) {
			row = l
		}
		if strings.HasPrefix(l, fresh.Grant.ID) {
			freshRow = l
		}
	}
	if f := strings.Fields(row); len(f) < 2 || f[1] != "expired" {
		t.Errorf("grants list row of the expired request: %q\n%s", row, list)
	}
	if f := strings.Fields(freshRow); len(f) < 2 || f[1] != "active" {
		t.Errorf("grants list row of the request approved in time: %q\n%s", freshRow, list)
	}
	var expired []authz.Grant
	g.CLIJSON(&expired, "alice", "grants", "list", "--state", "expired")
	if len(expired) != 2 {
		t.Errorf("grants list --state expired: %d grants, want the 2 requests nobody decided: %+v", len(expired), expired)
	}

	// Its token opens nothing, and the agent is told why.
	out, err = g.psql("agent-1", stale.Token, "demo-pg", "select 1;")
	if err == nil || !strings.Contains(out, "request "+id+" expired at") {
		t.Errorf("psql with the expired request's token: %v\n%s", err, out)
	}
	// The one approved in time works.
	if out, err := g.psql("agent-1", fresh.Token, "demo-pg", "select 1;", "-At"); err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("psql with the grant approved in time: %v\n%s", err, out)
	}
}
