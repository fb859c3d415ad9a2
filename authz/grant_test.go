package authz

import (
	"encoding/json"
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
