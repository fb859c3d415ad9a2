package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/natsconn"
)

func tokenHash(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(`
listen: { postgres: 127.0.0.1:1, http: 127.0.0.1:2 }
grants: { max_ttl: 2h }
identities:
  - { name: agent-1, role: agent, token_sha256: "` + tokenHash("agent-tok") + `" }
  - { name: agent-2, role: agent, token_sha256: "` + tokenHash("agent2-tok") + `" }
  - { name: alice, role: approver, token_sha256: "` + tokenHash("alice-tok") + `" }
  - { name: rita, role: reviewer, token_sha256: "` + tokenHash("rita-tok") + `" }
resources:
  - { name: demo-pg, protocol: postgres, address: "127.0.0.1:5432", database: app, user: postgres, auth: { type: password, password_env: X } }
`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openStore(t *testing.T) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, natsconn.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s, err := OpenStore(ctx, nc.NC, nc.JS, StoreOptions{Bucket: "grants", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestGrantLifecycle(t *testing.T) {
	store := openStore(t)
	now := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	svc := &Service{Store: store, Config: testConfig(t), Now: func() time.Time { return now }}
	ctx := context.Background()

	var mu sync.Mutex
	var changes []authz.State
	store.OnChange(func(g *authz.Grant) { mu.Lock(); changes = append(changes, g.State); mu.Unlock() })

	iss, err := svc.Request(ctx, "agent-1", GrantSpec{Resource: "demo-pg", Task: "INC-1", Access: "write", TTL: "30m"})
	if err != nil {
		t.Fatal(err)
	}
	g := iss.Grant
	if g.State != authz.StatePending || g.Access != authz.AccessWrite || !g.Verifier.CheckToken(iss.Token) {
		t.Fatalf("request: %+v", g)
	}
	if _, err := svc.Decide(ctx, g.ID, "revoke", "alice"); err == nil {
		t.Fatal("a pending request was revoked")
	}
	g, err = svc.Decide(ctx, g.ID, "approve", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if g.State != authz.StateActive || g.DecidedBy != "alice" || !g.ExpiresAt.Equal(now.Add(30*time.Minute)) {
		t.Fatalf("approved: %+v", g)
	}
	if _, err := svc.Decide(ctx, g.ID, "approve", "alice"); err == nil || !strings.Contains(err.Error(), "not pending") {
		t.Fatalf("approving twice: %v", err)
	}
	if got, _ := store.ForAgent("agent-1"); len(got) != 1 || got[0].State != authz.StateActive {
		t.Fatalf("ForAgent: %+v", got)
	}
	now = now.Add(31 * time.Minute)
	if st := g.EffectiveState(now); st != authz.StateExpired {
		t.Fatalf("after its ttl the grant reads %s", st)
	}
	g, err = svc.Decide(ctx, g.ID, "revoke", "alice")
	if err != nil || g.State != authz.StateRevoked || g.RevokedBy != "alice" {
		t.Fatalf("revoke: %+v %v", g, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) < 3 || changes[len(changes)-1] != authz.StateRevoked {
		t.Fatalf("change notifications: %v", changes)
	}
}

func TestRequestValidation(t *testing.T) {
	svc := &Service{Store: openStore(t), Config: testConfig(t)}
	ctx := context.Background()
	for _, c := range []struct {
		spec GrantSpec
		want string
	}{
		{GrantSpec{Resource: "nope", Task: "x"}, "unknown resource"},
		{GrantSpec{Resource: "demo-pg", Task: "  "}, "task is required"},
		{GrantSpec{Resource: "demo-pg", Task: "x", Access: "root"}, "unknown access level"},
		{GrantSpec{Resource: "demo-pg", Task: "x", TTL: "3h"}, "longer than the gateway's maximum"},
		{GrantSpec{Resource: "demo-pg", Task: "x", TTL: "soon"}, "not a positive duration"},
	} {
		if _, err := svc.Request(ctx, "agent-1", c.spec); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.spec, err, c.want)
		}
	}
	if _, err := svc.Request(ctx, "alice", GrantSpec{Resource: "demo-pg", Task: "x"}); err == nil {
		t.Error("an approver filed an agent request for itself")
	}
}

func TestAPIRoles(t *testing.T) {
	svc := &Service{Store: openStore(t), Config: testConfig(t)}
	api := &API{Service: svc}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	ctx := context.Background()
	as := func(tok string) *Client { return &Client{Server: srv.URL, Token: tok} }

	if _, err := as("wrong").Grants(ctx, nil); err == nil || !strings.Contains(err.Error(), "unknown API token") {
		t.Fatalf("unknown token: %v", err)
	}
	iss, err := as("agent-tok").Request(ctx, GrantSpec{Resource: "demo-pg", Task: "INC-9"})
	if err != nil {
		t.Fatal(err)
	}
	if iss.Grant.Verifier != nil {
		t.Fatal("the API returned the token verifier")
	}
	if _, err := as("agent-tok").Decide(ctx, iss.Grant.ID, "approve"); err == nil || err.(*APIError).Status != http.StatusForbidden {
		t.Fatalf("agent approving: %v", err)
	}
	if _, err := as("agent2-tok").Grant(ctx, iss.Grant.ID); err == nil {
		t.Fatal("an agent reads another agent's grant")
	}
	if gs, err := as("agent2-tok").Grants(ctx, nil); err != nil || len(gs) != 0 {
		t.Fatalf("agent-2 lists %d grants, %v", len(gs), err)
	}
	if _, err := as("agent-tok").CreateGrant(ctx, GrantSpec{Agent: "agent-1", Resource: "demo-pg", Task: "x"}); err == nil {
		t.Fatal("an agent created a pre-approved grant")
	}
	g, err := as("alice-tok").Decide(ctx, iss.Grant.ID, "approve")
	if err != nil || g.State != authz.StateActive {
		t.Fatalf("approver approving: %+v %v", g, err)
	}
	if _, err := as("rita-tok").Decide(ctx, iss.Grant.ID, "revoke"); err == nil {
		t.Fatal("a reviewer revoked")
	}
	if _, err := as("alice-tok").Decide(ctx, "gr_nope", "approve"); err == nil || err.(*APIError).Status != http.StatusNotFound {
		t.Fatalf("unknown grant: %v", err)
	}
}
