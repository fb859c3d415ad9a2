package mcp

import (
	"context"
	"fmt"
	"sync"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"golang.org/x/crypto/ssh"
)

// grant is one grant of the session: its token, where its resource is
// reached, and the connection open through the gateway for it, kept
// across tool calls so that the agent's calls make one recorded session
// (a transaction begun in one query call continues in the next).
type grant struct {
	id       string
	agent    string
	resource string
	protocol string // postgres, mysql or ssh
	address  string // the gateway's listener, host:port
	token    string // the grant's password; never logged

	// mu runs one call at a time on the connection, as one client would.
	mu sync.Mutex
	pg *pgconn.PgConn
	// types names Postgres column types.
	types *pgtype.Map
	my    *client.Conn
	ssh   *ssh.Client
}

// closeConn ends the grant's open connection, if any; mu is held.
func (g *grant) closeConn() bool {
	open := g.pg != nil || g.my != nil || g.ssh != nil
	if g.pg != nil {
		// A bounded context: a gateway that stopped answering must not
		// hold end_session up.
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		_ = g.pg.Close(ctx)
		cancel()
		g.pg = nil
	}
	if g.my != nil {
		_ = g.my.Close()
		g.my = nil
	}
	if g.ssh != nil {
		_ = g.ssh.Close()
		g.ssh = nil
	}
	return open
}

// grants are the session's grants by id, in memory only.
type grants struct {
	mu sync.Mutex
	m  map[string]*grant
}

func newGrants() *grants { return &grants{m: map[string]*grant{}} }

func (t *grants) add(g *grant) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[g.id] = g
}

// get returns grant id of this session, or an error the agent can act on.
func (t *grants) get(id string) (*grant, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	g, ok := t.m[id]
	if !ok {
		return nil, fmt.Errorf("no grant %q in this MCP session: request_access returns the id; the token of a grant requested elsewhere is not known here", id)
	}
	return g, nil
}

func (t *grants) closeAll() {
	t.mu.Lock()
	all := make([]*grant, 0, len(t.m))
	for _, g := range t.m {
		all = append(all, g)
	}
	t.mu.Unlock()
	for _, g := range all {
		g.mu.Lock()
		g.closeConn()
		g.mu.Unlock()
	}
}
