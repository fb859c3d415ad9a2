package mysql

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/proxy"
)

// A MySQL client stops a running statement (mysql's Ctrl-C, JDBC's
// Statement.cancel) by opening a second connection and sending
// KILL QUERY with the connection id from the first one's greeting; people
// and tools also kill by the id SELECT CONNECTION_ID() shows, which is the
// upstream's thread id. A session has both: the gateway's greeting goes
// out before the upstream connection exists. So KILL [HARD | SOFT]
// [QUERY | CONNECTION] n takes either id, of a live session of the same
// grant on this gateway, under any access level (it stops the grant's own
// work and starts none), and the KILL that reaches the upstream names that
// session's upstream thread. Any other id is refused as the server refuses
// an id it does not have (1094, Unknown thread id) and recorded, unless
// the grant is admin: then the KILL goes to the server as written.
//
// Greeting ids are drawn from [2^30, 2^31), above the thread ids servers
// hand out, so the two kinds of id do not meet.
//
// A KILL of a session whose statement waits for an approver (a hold,
// proxy/hold.go) ends that wait as cancelled: its client gets 1317
// ER_QUERY_INTERRUPTED, as from a killed query. Nothing runs upstream for
// it, so a KILL QUERY is not sent there; a KILL CONNECTION still is.

// killTarget is a live session that a KILL may name.
type killTarget struct {
	grant, resource string
	thread          uint32 // the upstream's connection id
	session         string
	sess            *proxy.Session
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

// find returns the session of grant that id names: its greeting id, or
// else its upstream thread id.
func (k *killTargets) find(grant string, id uint32) (killTarget, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if t, ok := k.m[id]; ok && t.grant == grant {
		return t, true
	}
	for _, t := range k.m {
		if t.grant == grant && t.thread == id {
			return t, true
		}
	}
	return killTarget{}, false
}

// newConnID draws a greeting connection id no live session has.
func (k *killTargets) newConnID() uint32 {
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		id := binary.LittleEndian.Uint32(b[:])&(1<<30-1) | 1<<30
		k.mu.Lock()
		_, taken := k.m[id]
		k.mu.Unlock()
		if !taken {
			return id
		}
	}
}

// killStmt is a KILL of one connection id.
type killStmt struct {
	modifier string // "", "HARD " or "SOFT "
	query    bool   // KILL QUERY rather than KILL [CONNECTION]
	id       uint32
}

func (k killStmt) sql(id uint32) string {
	what := "CONNECTION"
	if k.query {
		what = "QUERY"
	}
	return fmt.Sprintf("KILL %s%s %d", k.modifier, what, id)
}

func (k killStmt) kind() string {
	if k.query {
		return "KILL QUERY"
	}
	return "KILL CONNECTION"
}

// parseKill reads KILL [HARD | SOFT] [CONNECTION | QUERY] n as clients
// send it (any case and spacing, an optional trailing ';'), and nothing
// else.
func parseKill(sql string) (killStmt, bool) {
	sql = strings.TrimSpace(sql)
	if len(sql) < 4 || !strings.EqualFold(sql[:4], "kill") {
		return killStmt{}, false // every COM_QUERY passes here: no work for the others
	}
	f := strings.Fields(strings.TrimSuffix(sql, ";"))
	var k killStmt
	if !strings.EqualFold(f[0], "kill") {
		return k, false
	}
	f = f[1:]
	if len(f) > 0 && (strings.EqualFold(f[0], "hard") || strings.EqualFold(f[0], "soft")) {
		k.modifier = strings.ToUpper(f[0]) + " "
		f = f[1:]
	}
	if len(f) > 0 && (strings.EqualFold(f[0], "query") || strings.EqualFold(f[0], "connection")) {
		k.query = strings.EqualFold(f[0], "query")
		f = f[1:]
	}
	if len(f) != 1 {
		return k, false
	}
	n, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return k, false
	}
	k.id = uint32(n)
	return k, true
}

// killVerdict decides a KILL of k.id sent as text: the verdict to record,
// the session it names (nil when refused), and whether the grant's own
// sessions decide it (ok false: the authorizer does, for an admin grant).
func (p *Protocol) killVerdict(sess *proxy.Session, text string, k killStmt) (v authz.Verdict, target *killTarget, ok bool) {
	g := sess.Grant()
	if g == nil {
		return v, nil, false
	}
	t, found := p.kills.find(g.ID, k.id)
	if !found {
		if g.Access >= authz.AccessAdmin {
			return v, nil, false
		}
		return authz.Verdict{Statements: []authz.Decision{{
			Text: text, Rule: "no-such-thread",
			Reason: fmt.Sprintf("no session of grant %s has connection id %d: an agent may stop only the statements and sessions of its own grant (the id the greeting gave, or CONNECTION_ID())", g.ID, k.id),
			Class:  authz.Classification{Kind: k.kind(), Required: authz.AccessAdmin, Why: "it names a connection of another grant, or none"},
		}}}, nil, true
	}
	why := fmt.Sprintf("it stops the grant's own session %s (upstream thread %d)", t.session, t.thread)
	return authz.Verdict{Allow: true, Statements: []authz.Decision{{
		Allow: true, Text: text, Rule: "own-session",
		Reason: why,
		Class:  authz.Classification{Kind: k.kind(), Required: authz.AccessRead, Why: why},
	}}}, &t, true
}
