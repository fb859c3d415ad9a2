package proxy

import (
	"testing"
	"time"

	"github.com/airlockhq/airlock/config"
)

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5432":              "127.0.0.1",
		"[::ffff:10.1.2.3]:22":        "10.1.2.3",
		"[2001:db8:1:2:3:4:5:6]:3306": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ff::1]:3306":   "2001:db8:1:2::/64",
		"pipe":                        "pipe",
	} {
		if got := sourceKey(in); got != want {
			t.Errorf("sourceKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoginThrottle(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	cfg := config.LoginFailures{PerSource: 3, PerAgent: 5, Window: 10 * time.Minute, Lockout: 5 * time.Minute, Delay: 100 * time.Millisecond, MaxDelay: time.Second}
	th := newLoginThrottle(cfg, func() time.Time { return now })

	// Each failure from one address waits longer; the third locks it.
	var delays []time.Duration
	for i := 0; i < 3; i++ {
		if scope, _ := th.lockout("10.0.0.1", "agent-1"); scope != "" {
			t.Fatalf("failure %d: locked (%s) before the limit", i+1, scope)
		}
		d, locked := th.failed("10.0.0.1", "agent-1")
		delays = append(delays, d)
		if (i == 2) != (len(locked) == 1 && locked[0] == "source") {
			t.Fatalf("failure %d: locked %v", i+1, locked)
		}
	}
	if delays[0] != 100*time.Millisecond || delays[1] != 200*time.Millisecond || delays[2] != 400*time.Millisecond {
		t.Errorf("delays %v, want 100ms 200ms 400ms", delays)
	}
	if scope, until := th.lockout("10.0.0.1", "agent-2"); scope != "source" || !until.Equal(now.Add(5*time.Minute)) {
		t.Errorf("lockout = %q until %v, want source until +5m", scope, until)
	}
	// Another address is not locked, and a success does not unlock the
	// locked one.
	if scope, _ := th.lockout("10.0.0.2", "agent-2"); scope != "" {
		t.Errorf("another address locked: %s", scope)
	}
	th.succeeded("10.0.0.1")
	if scope, _ := th.lockout("10.0.0.1", "x"); scope != "source" {
		t.Errorf("success lifted a lockout")
	}

	// After the lockout the address may try again.
	now = now.Add(5*time.Minute + time.Second)
	if scope, _ := th.lockout("10.0.0.1", "x"); scope != "" {
		t.Errorf("still locked after the lockout: %s", scope)
	}

	// Guesses at one agent from many addresses lock the agent.
	for i := 0; i < 2; i++ {
		th.failed("10.0.1.1", "agent-9")
		th.failed("10.0.1.2", "agent-9")
	}
	if scope, _ := th.lockout("10.0.1.3", "agent-9"); scope != "" {
		t.Fatalf("agent locked after 4 of 5: %s", scope)
	}
	if _, locked := th.failed("10.0.1.3", "agent-9"); len(locked) != 1 || locked[0] != "agent" {
		t.Fatalf("fifth failure for the agent locked %v, want [agent]", locked)
	}
	if scope, _ := th.lockout("10.9.9.9", "agent-9"); scope != "agent" {
		t.Errorf("agent not locked from a fresh address: %q", scope)
	}

	// Failures older than the window are forgotten, and the sweep drops
	// idle entries.
	now = now.Add(time.Hour)
	th.failed("10.0.2.1", "")
	if len(th.sources) != 1 || len(th.agents) != 0 {
		t.Errorf("after the window: %d sources, %d agents tracked, want 1 and 0", len(th.sources), len(th.agents))
	}
	if d, _ := th.failed("10.0.2.1", ""); d != 200*time.Millisecond {
		t.Errorf("second recent failure waits %v, want 200ms", d)
	}
}

func TestLoginThrottleUnlimited(t *testing.T) {
	now := time.Now()
	th := newLoginThrottle(config.LoginFailures{PerSource: -1, PerAgent: -1, Window: time.Minute, Delay: time.Millisecond, MaxDelay: 8 * time.Millisecond}, func() time.Time { return now })
	var d time.Duration
	for i := 0; i < 1000; i++ {
		var locked []string
		if d, locked = th.failed("10.0.0.1", "agent-1"); len(locked) > 0 {
			t.Fatalf("locked %v without a limit", locked)
		}
	}
	if d != 8*time.Millisecond {
		t.Errorf("delay %v, want the cap 8ms", d)
	}
	if n := len(th.sources["10.0.0.1"].at); n > maxTracked {
		t.Errorf("%d failure times kept, want at most %d", n, maxTracked)
	}
}
