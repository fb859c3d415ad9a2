package mysql

import (
	"fmt"
	"strings"

	"github.com/airlockhq/airlock/authz"
)

// CALL runs what the procedure's body holds, so it is decided by that:
// just before a CALL in a COM_QUERY would be forwarded, the listener reads
// the procedure's definition from the server (SHOW CREATE PROCEDURE, on
// the session's own upstream connection) and the authorizer reads its body
// as for CREATE PROCEDURE. The CALL needs read plus whatever the body
// needs, and the body's tables count against the grant's table scope.
// CALLs inside the body are followed the same way. A procedure airlock
// cannot read (none of that name, its text hidden, a body it does not
// read) needs admin, as any CALL did before. Prepared CALLs (PREPARE,
// COM_STMT_PREPARE) need admin too: their executions come later, when the
// procedure may have changed.
//
// The definition is read one round trip before the CALL runs; a
// procedure replaced in between (by another connection with DDL rights)
// runs as replaced. docs/mysql.md says so.

// Routines reads a stored procedure's definition from the server.
// The listener answers it on the session's own upstream connection, just
// before the CALL would be forwarded.
type Routines interface {
	// ShowCreateProcedure returns the statement SHOW CREATE PROCEDURE
	// db.name shows and the sql_mode the procedure was created under; ok
	// is false when the server shows none (no such procedure, or its
	// text is hidden from the account).
	ShowCreateProcedure(db, name string) (create, sqlMode string, ok bool, err error)
}

// myCallResolver decides a CALL by what the procedure runs: it reads the
// procedure's definition from the server (Routines) and its body as
// for CREATE PROCEDURE.
type myCallResolver struct {
	src Routines
	// dbs are the possible current databases, for unqualified names.
	dbs []string
	// seen are the procedures being read, so a recursive one is read
	// once; depth bounds nesting.
	seen  []string
	depth int
}

// maxCallDepth bounds how deep CALLs inside bodies are followed.
const maxCallDepth = 8

// resolve decides the CALLs b holds. One airlock cannot read needs admin,
// as before; one it can needs what its body needs.
func (c *myCallResolver) resolve(b *myAnalysis, set *mySettings) {
	calls := b.calls
	b.calls = nil
	if len(calls) > 0 && c != nil && c.src != nil {
		b.volatile = true
	}
	for _, call := range calls {
		why := c.read(b, call, set)
		if why == "" {
			continue
		}
		if b.f.Unresolved == "" {
			b.f.Unresolved = "CALL runs a procedure that may touch any table"
		}
		b.need(authz.AccessAdmin, "CALL runs a procedure airlock cannot inspect ("+why+")")
	}
}

// read adds what procedure call runs to b, or says why it cannot.
func (c *myCallResolver) read(b *myAnalysis, call myCall, set *mySettings) string {
	switch {
	case c == nil:
		return "a prepared CALL runs later, when the procedure may have changed"
	case c.src == nil:
		return "airlock cannot read procedures here"
	}
	db := call.db
	if db == "" {
		if len(c.dbs) != 1 {
			return "no single current database"
		}
		db = c.dbs[0]
	}
	name := db + "." + call.name
	for _, s := range c.seen {
		if strings.EqualFold(s, name) {
			return "" // recursion: its body is being read already
		}
	}
	if c.depth >= maxCallDepth {
		return fmt.Sprintf("CALLs nested more than %d deep", maxCallDepth)
	}
	create, mode, ok, err := c.src.ShowCreateProcedure(db, call.name)
	switch {
	case err != nil:
		return "reading its definition failed: " + authz.OneLine(err.Error())
	case !ok:
		return "the server shows no procedure " + name
	}
	o := Options{SQLMode: mode}
	rs := readMySQLOptions(&o)
	rs.lex.server = set.lex.server
	segs, cl, lerr := myLexClean(create, rs.lex)
	if lerr != nil || len(segs) == 0 {
		return "its definition cannot be read"
	}
	body := &myAnalysis{}
	inner := &myCallResolver{src: c.src, dbs: []string{db}, seen: append(append([]string(nil), c.seen...), name), depth: c.depth + 1}
	kind, end, rerr := readCompound(create, cl, segs[0].start, &rs, inner, body, true)
	if rerr != nil || kind != "CREATE PROCEDURE" || strings.TrimSpace(cl[end:]) != "" {
		return "its definition cannot be read"
	}
	// Creating it was DDL; calling it runs its body.
	body.f.Own, body.f.OwnWhy = authz.AccessRead, ""
	if body.f.Drops == "DROP PROCEDURE drops a procedure" {
		body.f.Drops = ""
	}
	b.merge(body, db)
	return ""
}
