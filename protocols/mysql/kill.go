package mysql

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/proxy"
)

// A MySQL client stops a running statement (mysql's Ctrl-C, JDBC's
// Statement.cancel) by opening a second connection and sending
// KILL QUERY with the connection id from the first one's greeting. That id
// is the gateway's, not the upstream's, so the gateway maps it: an agent
// may stop a statement of its own session on the same resource, whatever
// its access level (it stops work, it starts none); the KILL QUERY that
// reaches the upstream names the upstream's thread. Anything else KILL
// does stays with the authorizer (admin).

// killTarget is a live session that a KILL QUERY may name.
type killTarget struct {
	agent, resource string
	thread          uint32 // the upstream's connection id
	session         string
}

// killTargets are the live sessions of a listener by the connection id
// their greeting gave.
type killTargets struct {
	mu sync.Mutex
	m  map[uint32]killTarget
}

// add registers a session under id; the function it returns removes it.
func (k *killTargets) add(id uint32, t killTarget) func() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[uint32]killTarget{}
	}
	k.m[id] = t
	return func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		delete(k.m, id)
	}
}

func (k *killTargets) find(id uint32) (killTarget, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	t, ok := k.m[id]
	return t, ok
}

// parseKillQuery reads "KILL QUERY n" as mysql and Connector/J send it
// (any case and spacing, an optional trailing ';'), and nothing else.
func parseKillQuery(sql string) (uint32, bool) {
	sql = strings.TrimSpace(sql)
	if len(sql) < 4 || !strings.EqualFold(sql[:4], "kill") {
		return 0, false // every COM_QUERY passes here: no work for the others
	}
	f := strings.Fields(strings.TrimSuffix(sql, ";"))
	if len(f) != 3 || !strings.EqualFold(f[0], "kill") || !strings.EqualFold(f[1], "query") {
		return 0, false
	}
	n, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

// ownKill is the decision on a KILL QUERY that names a session of the
// same agent on the same resource, with the statement the upstream is
// sent instead; ok is false for any other KILL.
func (p *Protocol) ownKill(sess *proxy.Session, sql string) (v authz.Verdict, upstreamSQL string, ok bool) {
	id, ok := parseKillQuery(sql)
	if !ok {
		return v, "", false
	}
	t, ok := p.kills.find(id)
	g := sess.Grant()
	if !ok || g == nil || t.agent != g.Agent || t.resource != sess.Resource().Name {
		return v, "", false
	}
	return authz.Verdict{Allow: true, Statements: []authz.Decision{{
		Allow: true, Text: sql, Rule: "own-session",
		Reason: fmt.Sprintf("stops the running statement of the agent's own session %s", t.session),
		Class:  authz.Classification{Kind: "KILL QUERY", Required: authz.AccessRead, Why: "stops a statement of the agent's own session " + t.session},
	}}}, fmt.Sprintf("KILL QUERY %d", t.thread), true
}
