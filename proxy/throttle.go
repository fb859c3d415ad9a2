package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/airlockhq/airlock/config"
)

// Guessing tokens. A grant token has far too many bits to guess, but a
// listener that answers wrong tokens at full speed invites trying, and
// every try costs a TLS handshake, a recorded event and a log line. So
// failed logins are counted per client address and per claimed agent
// (config.LoginFailures): each failure's answer waits longer than the one
// before, and past a limit the address or agent is refused for a while
// without its token being checked. Successful logins are never delayed.

// loginThrottle counts failed logins. It is safe for concurrent use.
type loginThrottle struct {
	cfg config.LoginFailures
	now func() time.Time

	mu      sync.Mutex
	sources map[string]*failures
	agents  map[string]*failures
	sweepAt time.Time
}

// failures are the recent failed logins of one address or agent.
type failures struct {
	// at holds the times of failures within the window, oldest first;
	// it never grows past the limit (or maxTracked).
	at     []time.Time
	locked time.Time // refused until then
}

// maxTracked bounds the failure times kept for a key without a limit:
// enough to reach the longest delay.
const maxTracked = 32

func newLoginThrottle(cfg config.LoginFailures, now func() time.Time) *loginThrottle {
	return &loginThrottle{cfg: cfg, now: now, sources: map[string]*failures{}, agents: map[string]*failures{}}
}

// sourceKey is the address failures are counted under: the IP, and for
// IPv6 its /64, which one host usually has to itself.
func sourceKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// lockout says whether logins from source, or for agent, are refused
// now: the scope ("source" or "agent") and until when.
func (t *loginThrottle) lockout(source, agent string) (scope string, until time.Time) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.sources[source]; f != nil && now.Before(f.locked) {
		return "source", f.locked
	}
	if f := t.agents[agent]; f != nil && now.Before(f.locked) {
		return "agent", f.locked
	}
	return "", time.Time{}
}

// failed counts a failed login from source claiming agent (empty when
// the name is no agent the gateway knows, so made-up names cannot grow
// the table) and returns how long to wait before answering, and which
// scopes this failure locked ("source", "agent").
func (t *loginThrottle) failed(source, agent string) (time.Duration, []string) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
	var locked []string
	n := t.addLocked(t.sources, source, t.cfg.PerSource, now)
	if n >= t.cfg.PerSource && t.cfg.PerSource > 0 {
		t.sources[source].locked = now.Add(t.cfg.Lockout)
		locked = append(locked, "source")
	}
	if agent != "" {
		m := t.addLocked(t.agents, agent, t.cfg.PerAgent, now)
		if m >= t.cfg.PerAgent && t.cfg.PerAgent > 0 {
			t.agents[agent].locked = now.Add(t.cfg.Lockout)
			locked = append(locked, "agent")
		}
		// A spread-out guess at one agent is slowed like a guess from
		// one address, at the agent's pace.
		n = max(n, m*max(t.cfg.PerSource, 1)/max(t.cfg.PerAgent, 1))
	}
	return t.delay(n), locked
}

// addLocked records a failure under key and returns how many it has in
// the window.
func (t *loginThrottle) addLocked(m map[string]*failures, key string, limit int, now time.Time) int {
	f := m[key]
	if f == nil {
		f = &failures{}
		m[key] = f
	}
	f.prune(now.Add(-t.cfg.Window))
	keep := maxTracked
	if limit > 0 {
		keep = max(limit, maxTracked)
	}
	if len(f.at) >= keep {
		f.at = append(f.at[:0], f.at[1:]...)
	}
	f.at = append(f.at, now)
	return len(f.at)
}

func (f *failures) prune(since time.Time) {
	i := 0
	for i < len(f.at) && f.at[i].Before(since) {
		i++
	}
	if i > 0 {
		f.at = append(f.at[:0], f.at[i:]...)
	}
}

// delay is the wait before answering the n-th failure in a window:
// Delay, doubling, at most MaxDelay.
func (t *loginThrottle) delay(n int) time.Duration {
	if n < 1 || t.cfg.Delay <= 0 {
		return 0
	}
	d := t.cfg.Delay
	for i := 1; i < n && d < t.cfg.MaxDelay; i++ {
		d *= 2
	}
	return min(d, t.cfg.MaxDelay)
}

// succeeded forgets an address's failures once it logs in. The agent's
// count stays: a guesser elsewhere must not be helped by the agent's own
// logins.
func (t *loginThrottle) succeeded(source string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.sources[source]; f != nil && !t.now().Before(f.locked) {
		delete(t.sources, source)
	}
}

// sweepLocked drops, at most once a minute, entries with no failure in
// the window and no lockout, so the table holds only recent guessers.
func (t *loginThrottle) sweepLocked(now time.Time) {
	if now.Before(t.sweepAt) {
		return
	}
	t.sweepAt = now.Add(time.Minute)
	since := now.Add(-t.cfg.Window)
	for _, m := range []map[string]*failures{t.sources, t.agents} {
		for k, f := range m {
			f.prune(since)
			if len(f.at) == 0 && !now.Before(f.locked) {
				delete(m, k)
			}
		}
	}
}

// throttled refuses a login from c's address, or for agent, while either
// is locked out. The refusal is answered after MaxDelay, so a client
// hammering a locked listener is slowed too.
func (c *Conn) throttled(agent string) *AuthError {
	t := c.srv.throttle
	if t == nil {
		return nil
	}
	scope, until := t.lockout(sourceKey(c.Remote), agent)
	if scope == "" {
		return nil
	}
	c.wait(t.cfg.MaxDelay)
	who := "from " + sourceKey(c.Remote)
	if scope == "agent" {
		who = "for agent " + agent
	}
	return &AuthError{"throttled", fmt.Sprintf("too many failed logins %s: logins refused until %s (limits.login_failures)", who, until.UTC().Format(time.RFC3339))}
}

// loginFailed counts a failed login (agent is a known agent's name, or
// empty) and waits the slow-down before the caller answers.
func (c *Conn) loginFailed(agent string) {
	if c.srv.throttle == nil {
		return
	}
	d, locked := c.srv.throttle.failed(sourceKey(c.Remote), agent)
	for _, scope := range locked {
		c.srv.Observer.LoginLocked(c.Proto, scope)
		c.log.Warn("login lockout: too many failed logins", "scope", scope, "agent", agent, "for", c.srv.throttle.cfg.Lockout)
	}
	c.wait(d)
}

// wait sleeps d unless the gateway shuts down first.
func (c *Conn) wait(d time.Duration) {
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	ctx := c.srv.baseCtx
	if ctx == nil {
		ctx = context.Background()
	}
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}
