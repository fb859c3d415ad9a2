package control

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
)

// TestGrantWait: GET /v1/grants/{id}?wait= answers a pending request as
// soon as it is decided, when it expires, when the wait passes, and at
// once when the API closes; an agent cannot wait on another's grant.
func TestGrantWait(t *testing.T) {
	store := openStore(t)
	cfg := testConfig(t)
	cfg.Grants.RequestTTL = 2 * time.Second
	svc := &Service{Store: store, Config: cfg}
	api := &API{Service: svc}
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	agent := &Client{Server: srv.URL, Token: "agent-tok"}
	ctx := context.Background()

	request := func(task string) string {
		iss, err := agent.Request(ctx, GrantSpec{Resource: "demo-pg", Task: task})
		if err != nil {
			t.Fatal(err)
		}
		return iss.Grant.ID
	}

	// Decided while waiting: answered at once.
	id := request("INC-1")
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, _ = svc.Decide(ctx, id, "approve", "alice")
	}()
	start := time.Now()
	g, err := agent.WaitGrant(ctx, id, 30*time.Second)
	if err != nil || g.State != authz.StateActive {
		t.Fatalf("wait through an approval: %+v %v", g, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the approval was heard after %s", d)
	}

	// Not pending: at once.
	start = time.Now()
	if g, err := agent.WaitGrant(ctx, id, 30*time.Second); err != nil || g.State != authz.StateActive || time.Since(start) > time.Second {
		t.Errorf("wait on an active grant: %+v %v after %s", g, err, time.Since(start))
	}

	// Undecided: the wait passes, still pending.
	id = request("INC-2")
	start = time.Now()
	g, err = agent.WaitGrant(ctx, id, 500*time.Millisecond)
	if err != nil || g.State != authz.StatePending || time.Since(start) < 400*time.Millisecond {
		t.Errorf("a wait that passes: %+v %v after %s", g, err, time.Since(start))
	}
	// ... until the request expires (request_ttl 2s): answered then.
	g, err = agent.WaitGrant(ctx, id, 30*time.Second)
	if err != nil || g.State != authz.StateExpired {
		t.Errorf("a wait through the request's expiry: %+v %v", g, err)
	}

	// Another agent's grant is not found.
	other := &Client{Server: srv.URL, Token: "agent2-tok"}
	if _, err := other.WaitGrant(ctx, id, time.Second); err == nil {
		t.Error("agent-2 waited on agent-1's grant")
	}

	// Close answers every wait.
	id = request("INC-3")
	done := make(chan *authz.Grant, 1)
	go func() {
		g, _ := agent.WaitGrant(ctx, id, 30*time.Second)
		done <- g
	}()
	time.Sleep(300 * time.Millisecond)
	api.Close()
	select {
	case g := <-done:
		if g == nil || g.State != authz.StatePending {
			t.Errorf("wait at close: %+v", g)
		}
	case <-time.After(5 * time.Second):
		t.Error("Close did not end the wait")
	}
}
