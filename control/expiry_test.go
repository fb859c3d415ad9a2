package control

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
)

// TestRequestExpiry: a request carries its deadline (grants.request_ttl
// after it was filed); past it, it reads as expired in the API and an
// approval or a denial is refused with 409 and a message saying the agent
// must request again. A request stored before the deadline existed never
// expires.
func TestRequestExpiry(t *testing.T) {
	cfg := testConfig(t)
	cfg.Grants.RequestTTL = 10 * time.Minute
	var mu sync.Mutex
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	svc := &Service{Store: openStore(t), Config: cfg, Now: clock}
	srv := httptest.NewServer((&API{Service: svc}).Handler())
	defer srv.Close()
	ctx := context.Background()
	alice := &Client{Server: srv.URL, Token: "alice-tok"}
	agent := &Client{Server: srv.URL, Token: "agent-tok"}

	iss, err := agent.Request(ctx, GrantSpec{Resource: "demo-pg", Task: "INC-7"})
	if err != nil {
		t.Fatal(err)
	}
	id := iss.Grant.ID
	deadline := time.Date(2026, 12, 5, 8, 10, 0, 0, time.UTC)
	if !iss.Grant.RequestExpiresAt.Equal(deadline) || iss.Grant.State != authz.StatePending {
		t.Fatalf("request: state %s, request_expires_at %s, want pending until %s", iss.Grant.State, iss.Grant.RequestExpiresAt, deadline)
	}
	// Another request, decided in time, is untouched by its deadline.
	iss2, err := agent.Request(ctx, GrantSpec{Resource: "demo-pg", Task: "INC-8", TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	advance(9 * time.Minute)
	if _, err := alice.Decide(ctx, iss2.Grant.ID, "approve"); err != nil {
		t.Fatalf("approving before the deadline: %v", err)
	}

	advance(time.Minute)
	for _, c := range []struct {
		action string
		o      DecideOptions
	}{{"approve", DecideOptions{}}, {"deny", DecideOptions{Comment: "too late"}}} {
		_, err := alice.DecideWith(ctx, id, c.action, c.o)
		ae, _ := err.(*APIError)
		want := "request " + id + " expired at 2026-12-05T08:10:00Z"
		if ae == nil || ae.Status != http.StatusConflict || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "the agent must request again") {
			t.Errorf("%s after the deadline: %v, want 409 %q ... the agent must request again", c.action, err, want)
		}
	}
	if g, _ := svc.Store.Get(id); g.State != authz.StatePending || g.DecidedBy != "" {
		t.Fatalf("a refused decision changed the stored request: %+v", g)
	}
	if _, err := alice.Decide(ctx, id, "revoke"); err == nil || !strings.Contains(err.Error(), "is expired") {
		t.Errorf("revoking an expired request: %v", err)
	}

	list, err := alice.Grants(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]authz.State{}
	for _, g := range list {
		states[g.ID] = g.State
	}
	if states[id] != authz.StateExpired || states[iss2.Grant.ID] != authz.StateActive {
		t.Errorf("listed states: %v, want %s expired and %s active", states, id, iss2.Grant.ID)
	}
	if got, err := alice.Grants(ctx, url.Values{"state": {"pending"}}); err != nil || len(got) != 0 {
		t.Errorf("pending list after the deadline: %+v %v", got, err)
	}

	// Stored before request_expires_at existed: waits until decided.
	old := &authz.Grant{ID: "gr_oldrequest", Agent: "agent-1", Resource: "demo-pg", Task: "INC-1", Access: authz.AccessRead,
		State: authz.StatePending, RequestedBy: "agent-1", RequestedAt: now.Add(-30 * 24 * time.Hour), TTL: authz.Duration(time.Hour)}
	if err := svc.Store.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	if g, err := alice.Decide(ctx, old.ID, "approve"); err != nil || g.State != authz.StateActive {
		t.Fatalf("approving a request without a deadline, 30 days old: %+v %v", g, err)
	}
}
