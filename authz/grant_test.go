package authz

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAccessRoundTrip(t *testing.T) {
	for a := AccessNone; a <= AccessAdmin; a++ {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		var back Access
		if err := json.Unmarshal(b, &back); err != nil || back != a {
			t.Errorf("%s: %s -> %v, %v", a, b, back, err)
		}
	}
	if _, err := ParseAccess("none"); err == nil {
		t.Error("a request may ask for access none")
	}
	if a, err := ParseAccess("WRITE"); err != nil || a != AccessWrite {
		t.Errorf("ParseAccess(WRITE) = %v, %v", a, err)
	}
}

func TestEffectiveState(t *testing.T) {
	now := time.Now()
	g := &Grant{State: StateActive, ExpiresAt: now.Add(time.Minute)}
	if g.EffectiveState(now) != StateActive || g.EffectiveState(now.Add(time.Minute)) != StateExpired {
		t.Error("expiry")
	}
	g.State = StateRevoked
	if g.EffectiveState(now.Add(time.Hour)) != StateRevoked {
		t.Error("a revoked grant reads as expired")
	}
}

// TestRequestExpiry: a pending request past its RequestExpiresAt reads as
// expired; a request stored without the field (before it existed) never
// expires while pending; a decided request does not read as expired by its
// request deadline.
func TestRequestExpiry(t *testing.T) {
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	g := &Grant{State: StatePending, RequestedAt: now, RequestExpiresAt: now.Add(time.Hour)}
	if st := g.EffectiveState(now.Add(59 * time.Minute)); st != StatePending {
		t.Errorf("before its deadline: %s", st)
	}
	if st := g.EffectiveState(now.Add(time.Hour)); st != StateExpired || !g.RequestExpired(now.Add(time.Hour)) {
		t.Errorf("at its deadline: %s", st)
	}
	if !g.ExpiredAt().Equal(now.Add(time.Hour)) {
		t.Errorf("ExpiredAt of a request: %s", g.ExpiredAt())
	}
	g.State = StateDenied
	if st := g.EffectiveState(now.Add(48 * time.Hour)); st != StateDenied {
		t.Errorf("a denied request reads %s after its request deadline", st)
	}
	g.State, g.ExpiresAt = StateActive, now.Add(3*time.Hour)
	if st := g.EffectiveState(now.Add(2 * time.Hour)); st != StateActive || !g.ExpiredAt().Equal(g.ExpiresAt) {
		t.Errorf("an approved request reads %s (expires %s) past its request deadline", st, g.ExpiredAt())
	}

	var old Grant
	if err := json.Unmarshal([]byte(`{"id":"gr_old","state":"pending","requested_at":"2020-01-01T00:00:00Z","ttl":"1h"}`), &old); err != nil {
		t.Fatal(err)
	}
	if st := old.EffectiveState(now); st != StatePending || !old.ExpiredAt().IsZero() {
		t.Errorf("a request stored without request_expires_at reads %s (expires %s); it must stay pending", st, old.ExpiredAt())
	}
	b, _ := json.Marshal(&old)
	if strings.Contains(string(b), "request_expires_at") {
		t.Errorf("a zero deadline is written: %s", b)
	}
	b, _ = json.Marshal(&Grant{State: StatePending, RequestExpiresAt: now})
	if !strings.Contains(string(b), `"request_expires_at":"2026-12-05T08:00:00Z"`) {
		t.Errorf("deadline not written: %s", b)
	}
}

func TestSSHPolicyAllows(t *testing.T) {
	if got := (SSHPolicy{}).Allows(); len(got) != 0 {
		t.Errorf("empty policy allows %q", got)
	}
	p := SSHPolicy{Commands: []string{"uptime", "systemctl status *"}, Shell: true, Files: "read", Forwards: []string{"db:5432"}}
	want := []string{"command: uptime", "command: systemctl status *", "interactive shell", "files: read", "forward to db:5432"}
	if got := p.Allows(); !slices.Equal(got, want) {
		t.Errorf("Allows() = %q, want %q", got, want)
	}
}
