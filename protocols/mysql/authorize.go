package mysql

import (
	"sync"

	"github.com/airlockhq/airlock/authz"
	myauthz "github.com/airlockhq/airlock/authz/mysql"
)

// Authorizer decides the statements of one client session. It keeps
// state across calls (the current database after USE, what PREPARE
// prepared), so each session has its own; myauthz.Session is the one
// the gateway uses.
type Authorizer interface {
	// Query decides one COM_QUERY text: every statement in it, all or
	// nothing.
	Query(g *authz.Grant, sql string) authz.Verdict
	// Prepare decides a COM_STMT_PREPARE text.
	Prepare(g *authz.Grant, sql string) authz.Verdict
	// InitDB decides a COM_INIT_DB into db.
	InitDB(g *authz.Grant, db string) authz.Verdict
	// SetDatabase tells the authorizer the server confirmed db as the
	// current database.
	SetDatabase(db string)
}

// cacheHolder keeps the decision cache the sessions of one listener
// share: agents repeat the same statements, and a parse costs more than a
// lookup.
type cacheHolder struct {
	once  sync.Once
	cache *authz.DecisionCache
}

func (p *Protocol) newAuthorizer(o myauthz.Options) Authorizer {
	if p.NewAuthorizer != nil {
		return p.NewAuthorizer(o)
	}
	p.cache.once.Do(func() { p.cache.cache = authz.NewDecisionCache(0) })
	o.Cache = p.cache.cache
	return myauthz.NewSession(o)
}

func quoteIdent(s string) string {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '`')
	for i := 0; i < len(s); i++ {
		if s[i] == '`' {
			b = append(b, '`')
		}
		b = append(b, s[i])
	}
	return string(append(b, '`'))
}
