package control

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/natsconn"
)

// openHoldStores starts an embedded JetStream server that listens on TCP
// and returns n hold stores, each on its own connection to it: n gateway
// replicas sharing the bucket.
func openHoldStores(t *testing.T, n int) []*HoldStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := natsconn.Connect(ctx, natsconn.Options{DataDir: t.TempDir(), EmbeddedListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	out := make([]*HoldStore, n)
	for i := range out {
		nc := srv
		if i > 0 {
			nc, err = natsconn.Connect(ctx, natsconn.Options{URL: srv.ClientURL()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
		}
		out[i], err = OpenHoldStore(ctx, nc.JS, HoldStoreOptions{Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func newTestHold(wait time.Duration) *authz.Hold {
	now := time.Now().UTC()
	return &authz.Hold{
		ID: NewHoldID(), Session: "se_1", Grant: "gr_1", Agent: "agent-1", Resource: "demo-pg", Task: "INC-1",
		Statements: []authz.HeldStatement{{Text: "DELETE FROM orders", Kind: "DELETE", Hold: true, Rule: authz.RuleHoldKind}},
		CreatedAt:  now, ExpiresAt: now.Add(wait),
	}
}

type waitResult struct {
	h   *authz.Hold
	err error
}

// startWait runs s.Wait(ctx, h) in the background and returns once the
// hold is in the bucket.
func startWait(t *testing.T, ctx context.Context, s *HoldStore, h *authz.Hold) <-chan waitResult {
	t.Helper()
	done := make(chan waitResult, 1)
	go func() {
		got, err := s.Wait(ctx, h)
		done <- waitResult{got, err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := s.Get(context.Background(), h.ID); err == nil {
			return done
		}
		if time.Now().After(deadline) {
			t.Fatalf("hold %s not stored after 5s", h.ID)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func recv(t *testing.T, done <-chan waitResult, within time.Duration) waitResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(within):
		t.Fatalf("Wait did not return within %s", within)
		return waitResult{}
	}
}

// TestHoldApprovedOnAnotherReplica: a decision made through a second
// store (another gateway replica) wakes the waiter at once, and deciding
// the hold again is refused with 409.
func TestHoldApprovedOnAnotherReplica(t *testing.T) {
	ss := openHoldStores(t, 2)
	waiter, approver := ss[0], ss[1]
	ctx := context.Background()
	h := newTestHold(time.Minute)
	done := startWait(t, ctx, waiter, h)

	if l, err := approver.List(ctx, authz.HoldPending); err != nil || len(l) != 1 || l[0].ID != h.ID || l[0].Statements[0].Text != "DELETE FROM orders" {
		t.Fatalf("pending list on the other replica: %+v %v", l, err)
	}
	start := time.Now()
	got, err := approver.Decide(ctx, h.ID, true, "alice", "ok, INC-1")
	if err != nil || got.State != authz.HoldApproved || got.DecidedBy != "alice" {
		t.Fatalf("approve: %+v %v", got, err)
	}
	r := recv(t, done, 5*time.Second)
	if r.err != nil || r.h.State != authz.HoldApproved || r.h.DecidedBy != "alice" || r.h.Comment != "ok, INC-1" {
		t.Fatalf("waiter got %+v %v", r.h, r.err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the waiter heard of the approval after %s", d)
	}
	for _, approve := range []bool{true, false} {
		_, err := waiter.Decide(ctx, h.ID, approve, "bob", "again")
		var ue *UserError
		if !errors.As(err, &ue) || ue.Status != http.StatusConflict || !strings.Contains(ue.Msg, "already approved by alice") {
			t.Fatalf("deciding twice (approve=%v): %v", approve, err)
		}
	}
	if l, _ := approver.List(ctx, authz.HoldPending); len(l) != 0 {
		t.Fatalf("still pending: %+v", l)
	}
	if l, _ := approver.List(ctx, authz.HoldApproved); len(l) != 1 {
		t.Fatalf("approved list: %+v", l)
	}
}

// TestHoldDenyNeedsReason: a denial without a reason changes nothing; with
// one, the waiter gets it.
func TestHoldDenyNeedsReason(t *testing.T) {
	ss := openHoldStores(t, 2)
	ctx := context.Background()
	h := newTestHold(time.Minute)
	done := startWait(t, ctx, ss[0], h)
	var ue *UserError
	if _, err := ss[1].Decide(ctx, h.ID, false, "alice", "  "); !errors.As(err, &ue) || ue.Status != http.StatusBadRequest || !strings.Contains(ue.Msg, "reason is required") {
		t.Fatalf("deny without a reason: %v", err)
	}
	if g, _ := ss[1].Get(ctx, h.ID); g.State != authz.HoldPending {
		t.Fatalf("after a refused denial the hold is %s", g.State)
	}
	if _, err := ss[1].Decide(ctx, h.ID, false, "alice", "not during business hours"); err != nil {
		t.Fatal(err)
	}
	r := recv(t, done, 5*time.Second)
	if r.err != nil || r.h.State != authz.HoldDenied || r.h.Comment != "not during business hours" || r.h.DecidedBy != "alice" {
		t.Fatalf("waiter got %+v %v", r.h, r.err)
	}
	if _, err := ss[1].Decide(ctx, "hd_nope", true, "alice", ""); !errors.As(err, &ue) || ue.Status != http.StatusNotFound {
		t.Fatalf("unknown hold: %v", err)
	}
}

// TestHoldExpires: undecided, the hold expires at its deadline, and a
// late approval is refused.
func TestHoldExpires(t *testing.T) {
	ss := openHoldStores(t, 2)
	ctx := context.Background()
	h := newTestHold(700 * time.Millisecond)
	done := startWait(t, ctx, ss[0], h)
	r := recv(t, done, 5*time.Second)
	if r.err != nil || r.h.State != authz.HoldExpired || !strings.Contains(r.h.Comment, "no approver decided") {
		t.Fatalf("waiter got %+v %v", r.h, r.err)
	}
	if time.Now().Before(h.ExpiresAt) {
		t.Fatal("expired before its deadline")
	}
	_, err := ss[1].Decide(ctx, h.ID, true, "alice", "")
	var ue *UserError
	if !errors.As(err, &ue) || ue.Status != http.StatusConflict || !strings.Contains(ue.Msg, "expired") {
		t.Fatalf("approving an expired hold: %v", err)
	}
	if g, _ := ss[1].Get(ctx, h.ID); g.State != authz.HoldExpired {
		t.Fatalf("stored as %s", g.State)
	}
}

// TestHoldCancel: the waiter's context ending cancels the hold, with the
// cause as its comment; approving it afterwards is refused.
func TestHoldCancel(t *testing.T) {
	ss := openHoldStores(t, 2)
	ctx, cancel := context.WithCancelCause(context.Background())
	h := newTestHold(time.Minute)
	done := startWait(t, ctx, ss[0], h)
	cancel(errors.New("client sent a cancel request"))
	r := recv(t, done, 5*time.Second)
	if r.err != nil || r.h.State != authz.HoldCancelled || r.h.Comment != "client sent a cancel request" {
		t.Fatalf("waiter got %+v %v", r.h, r.err)
	}
	_, err := ss[1].Decide(context.Background(), h.ID, true, "alice", "")
	var ue *UserError
	if !errors.As(err, &ue) || ue.Status != http.StatusConflict || !strings.Contains(ue.Msg, "cancelled") {
		t.Fatalf("approving a cancelled hold: %v", err)
	}
}

// TestHoldDecisionRacesCancel: when an approval and the waiter's cancel
// race, exactly one wins, and Wait returns what the bucket holds.
func TestHoldDecisionRacesCancel(t *testing.T) {
	ss := openHoldStores(t, 2)
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithCancelCause(context.Background())
		h := newTestHold(time.Minute)
		done := startWait(t, ctx, ss[0], h)
		var wg sync.WaitGroup
		var dec *authz.Hold
		var decErr error
		wg.Add(1)
		go func() { defer wg.Done(); dec, decErr = ss[1].Decide(context.Background(), h.ID, true, "alice", "") }()
		cancel(errors.New("client gone"))
		wg.Wait()
		r := recv(t, done, 5*time.Second)
		stored, err := ss[1].Get(context.Background(), h.ID)
		if r.err != nil || err != nil {
			t.Fatalf("wait %v, get %v", r.err, err)
		}
		if r.h.State != stored.State {
			t.Fatalf("Wait returned %s, the bucket holds %s", r.h.State, stored.State)
		}
		switch stored.State {
		case authz.HoldApproved:
			if decErr != nil || dec.State != authz.HoldApproved {
				t.Fatalf("approved in the bucket but Decide said %v", decErr)
			}
		case authz.HoldCancelled:
			if decErr == nil {
				t.Fatal("cancelled in the bucket but Decide succeeded")
			}
		default:
			t.Fatalf("hold ended %s", stored.State)
		}
	}
}

// TestHoldIDNotReused: Wait with an id already in the bucket fails rather
// than overwriting it.
func TestHoldIDNotReused(t *testing.T) {
	ss := openHoldStores(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	h := newTestHold(time.Minute)
	done := startWait(t, ctx, ss[0], h)
	cancel()
	recv(t, done, 5*time.Second)
	if _, err := ss[0].Wait(context.Background(), h); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("reused id: %v", err)
	}
}

// TestHoldsAPI: the routes, their roles, and the client.
func TestHoldsAPI(t *testing.T) {
	ss := openHoldStores(t, 1)
	svc := &Service{Store: openStore(t), Config: testConfig(t), Holds: ss[0]}
	srv := httptest.NewServer((&API{Service: svc}).Handler())
	defer srv.Close()
	ctx := context.Background()
	as := func(tok string) *Client { return &Client{Server: srv.URL, Token: tok} }

	h1, h2 := newTestHold(time.Minute), newTestHold(time.Minute)
	h2.CreatedAt = h1.CreatedAt.Add(time.Second)
	d1 := startWait(t, ctx, ss[0], h1)
	d2 := startWait(t, ctx, ss[0], h2)

	for _, tok := range []string{"agent-tok", "rita-tok"} {
		if _, err := as(tok).Holds(ctx, ""); err == nil || err.(*APIError).Status != http.StatusForbidden {
			t.Fatalf("%s lists holds: %v", tok, err)
		}
		if _, err := as(tok).ApproveHold(ctx, h1.ID, ""); err == nil || err.(*APIError).Status != http.StatusForbidden {
			t.Fatalf("%s approves: %v", tok, err)
		}
	}
	l, err := as("alice-tok").Holds(ctx, authz.HoldPending)
	if err != nil || len(l) != 2 || l[0].ID != h2.ID || l[1].ID != h1.ID {
		t.Fatalf("pending, newest first: %+v %v", l, err)
	}
	if _, err := as("alice-tok").Holds(ctx, "soon"); err == nil || err.(*APIError).Status != http.StatusBadRequest {
		t.Fatalf("bad state: %v", err)
	}
	if g, err := as("alice-tok").Hold(ctx, h1.ID); err != nil || g.Agent != "agent-1" {
		t.Fatalf("show: %+v %v", g, err)
	}
	if _, err := as("alice-tok").Hold(ctx, "hd_nope"); err == nil || err.(*APIError).Status != http.StatusNotFound {
		t.Fatalf("show unknown: %v", err)
	}
	if _, err := as("alice-tok").DenyHold(ctx, h1.ID, ""); err == nil || err.(*APIError).Status != http.StatusBadRequest {
		t.Fatalf("deny without a reason: %v", err)
	}
	if g, err := as("alice-tok").ApproveHold(ctx, h1.ID, "fine"); err != nil || g.State != authz.HoldApproved || g.DecidedBy != "alice" {
		t.Fatalf("approve: %+v %v", g, err)
	}
	if r := recv(t, d1, 5*time.Second); r.h.State != authz.HoldApproved {
		t.Fatalf("waiter 1: %+v %v", r.h, r.err)
	}
	if _, err := as("alice-tok").DenyHold(ctx, h1.ID, "changed my mind"); err == nil || err.(*APIError).Status != http.StatusConflict {
		t.Fatalf("deny after approve: %v", err)
	}
	if g, err := as("alice-tok").DenyHold(ctx, h2.ID, "no"); err != nil || g.State != authz.HoldDenied || g.Comment != "no" {
		t.Fatalf("deny: %+v %v", g, err)
	}
	if r := recv(t, d2, 5*time.Second); r.h.State != authz.HoldDenied {
		t.Fatalf("waiter 2: %+v %v", r.h, r.err)
	}

	// Without a hold store the routes say so.
	off := httptest.NewServer((&API{Service: &Service{Store: svc.Store, Config: svc.Config}}).Handler())
	defer off.Close()
	if _, err := (&Client{Server: off.URL, Token: "alice-tok"}).Holds(ctx, ""); err == nil || err.(*APIError).Status != http.StatusServiceUnavailable {
		t.Fatalf("no hold store: %v", err)
	}
}

// TestHoldFollow: Follow delivers the holds already stored, then a hold
// created and decided through another replica.
func TestHoldFollow(t *testing.T) {
	ss := openHoldStores(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old := newTestHold(time.Minute)
	oldDone := startWait(t, ctx, ss[1], old)
	seen := make(chan *authz.Hold, 16)
	go ss[0].Follow(ctx, func(h *authz.Hold) { seen <- h })
	next := func() *authz.Hold {
		t.Helper()
		select {
		case h := <-seen:
			return h
		case <-time.After(10 * time.Second):
			t.Fatal("Follow delivered nothing")
			return nil
		}
	}
	if h := next(); h.ID != old.ID || h.State != authz.HoldPending {
		t.Fatalf("first delivery: %+v", h)
	}
	if _, err := ss[1].Decide(ctx, old.ID, true, "alice", ""); err != nil {
		t.Fatal(err)
	}
	recv(t, oldDone, 10*time.Second)
	if h := next(); h.ID != old.ID || h.State != authz.HoldApproved || h.DecidedBy != "alice" {
		t.Fatalf("after the decision: %+v", h)
	}
	fresh := newTestHold(time.Minute)
	startWait(t, ctx, ss[1], fresh)
	if h := next(); h.ID != fresh.ID || h.State != authz.HoldPending {
		t.Fatalf("a new hold: %+v", h)
	}
}
