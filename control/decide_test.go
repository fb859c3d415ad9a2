package control

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
)

// TestDecideWith: an approval may narrow a request (a shorter TTL, some of
// the tables) and carries a comment; it never widens, and a denial needs a
// reason. Through the API, as the CLI sends it.
func TestDecideWith(t *testing.T) {
	svc := &Service{Store: openStore(t), Config: testConfig(t)}
	srv := httptest.NewServer((&API{Service: svc}).Handler())
	defer srv.Close()
	ctx := context.Background()
	alice := &Client{Server: srv.URL, Token: "alice-tok"}
	agent := &Client{Server: srv.URL, Token: "agent-tok"}
	request := func(spec GrantSpec) string {
		t.Helper()
		spec.Resource, spec.Task = "demo-pg", "INC-3"
		iss, err := agent.Request(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		return iss.Grant.ID
	}
	id := request(GrantSpec{TTL: "1h", Scope: authz.Scope{Tables: []string{"public.a", "public.b"}}})
	for _, c := range []struct {
		action string
		o      DecideOptions
		want   string
	}{
		{"approve", DecideOptions{TTL: "2h"}, "longer than the 1h0m0s asked for"},
		{"approve", DecideOptions{TTL: "-5m"}, "not a positive duration"},
		{"approve", DecideOptions{Tables: []string{"public.a", "public.c"}}, `table "public.c" was not asked for`},
		{"approve", DecideOptions{Tables: []string{"a.b.c"}}, "want SCHEMA.TABLE"},
		{"approve", DecideOptions{Comment: strings.Repeat("x", 1001)}, "longer than 1000"},
		{"deny", DecideOptions{}, "needs a reason"},
		{"deny", DecideOptions{Comment: "no", TTL: "5m"}, "narrow an approval"},
		{"revoke", DecideOptions{Tables: []string{"public.a"}}, "narrow an approval"},
	} {
		_, err := alice.DecideWith(ctx, id, c.action, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) || err.(*APIError).Status != http.StatusBadRequest {
			t.Errorf("%s %+v: %v, want 400 %q", c.action, c.o, err, c.want)
		}
	}
	if g, _ := svc.Store.Get(id); g.State != authz.StatePending {
		t.Fatalf("refused decisions changed the request: %s", g.State)
	}
	g, err := alice.DecideWith(ctx, id, "approve", DecideOptions{TTL: "10m", Tables: []string{"public.b"}, Comment: " only b "})
	if err != nil {
		t.Fatal(err)
	}
	if g.State != authz.StateActive || time.Duration(g.TTL) != 10*time.Minute || strings.Join(g.Scope.Tables, ",") != "public.b" ||
		g.Comment != "only b" || g.ApprovalComment() != "only b" || g.Asked == nil || time.Duration(g.Asked.TTL) != time.Hour {
		t.Fatalf("narrowed approval: %+v (asked %+v)", g, g.Asked)
	}
	if d := time.Until(g.ExpiresAt); d > 10*time.Minute || d < 9*time.Minute {
		t.Errorf("expires in %s, want 10m", d)
	}
	// Any table asked: the approval may name some.
	id = request(GrantSpec{})
	if g, err = alice.DecideWith(ctx, id, "approve", DecideOptions{Tables: []string{"public.orders"}}); err != nil || strings.Join(g.Scope.Tables, ",") != "public.orders" {
		t.Fatalf("limiting an any-table request: %+v %v", g, err)
	}
	// Nothing given: as before, no comment, nothing kept as asked.
	id = request(GrantSpec{})
	if g, err = alice.Decide(ctx, id, "approve"); err != nil || g.Asked != nil || g.Comment != "" {
		t.Fatalf("plain approval: %+v %v", g, err)
	}
	id = request(GrantSpec{})
	if g, err = alice.DecideWith(ctx, id, "deny", DecideOptions{Comment: "freeze"}); err != nil || g.State != authz.StateDenied || g.Comment != "freeze" || g.ApprovalComment() != "" {
		t.Fatalf("denial with reason: %+v %v", g, err)
	}
}
