// Package postgres is the authorizer of Postgres SQL: it reads a message
// with the Postgres parser (pgparse) into the facts package authz decides
// on. The gateway keeps one Session per client session and gives it every
// Query and Parse message; Startup decides on the startup parameters.
package postgres

import (
	"errors"
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/elide"
	"github.com/airlockhq/airlock/authz/postgres/pgparse"
)

// parseError is text the Postgres parser could not read.
type parseError struct {
	msg string
	// cursor is the 1-based character position of the error, 0 when
	// unknown.
	cursor int
	// syntax is what the server would answer, when the parser itself
	// refused the text (not for a NUL byte, which the protocol cannot
	// carry in a statement anyway).
	syntax *authz.SyntaxError
}

func (e *parseError) Error() string {
	if e.cursor > 0 {
		return fmt.Sprintf("authz: postgres: %s at position %d", e.msg, e.cursor)
	}
	return "authz: postgres: " + e.msg
}

// pgStmt is one statement as the classifier read it, before the session's
// default schema and state are applied.
type pgStmt struct {
	text, kind string
	// start and end are where text lies in the message.
	start, end int
	a          *analysis
}

// classifyPG parses a message and classifies each statement.
func classifyPG(sql string) ([]pgStmt, error) {
	// The parser takes a C string, so it would read only up to a NUL byte
	// and judge a prefix of what the server is sent.
	if i := strings.IndexByte(sql, 0); i >= 0 {
		return nil, &parseError{msg: "the message contains a NUL byte", cursor: i + 1}
	}
	if len(sql) >= elide.Min && elideLiterals {
		if out, ok := classifyPGElided(sql); ok {
			return out, nil
		}
	}
	tree, err := pgparse.Parse(sql)
	if err != nil {
		pe := &parseError{msg: err.Error()}
		if perr, ok := err.(*parser.Error); ok {
			pe.cursor = perr.Cursorpos
			pe.syntax = pgSyntaxError(perr)
		}
		return nil, pe
	}
	out := make([]pgStmt, 0, len(tree.Stmts))
	for _, raw := range tree.Stmts {
		kind, a := classify(raw.Stmt)
		start, end := stmtSpan(sql, raw)
		out = append(out, pgStmt{text: sql[start:end], start: start, end: end, kind: kind, a: a})
	}
	return out, nil
}

// elideLiterals turns literal elision on; tests turn it off to compare.
var elideLiterals = true

// classifyPGElided is classifyPG on the message with its long literals
// elided (see elide.go); false when there are none, or the check that
// they came back where they were put fails, or the reduced message does
// not parse: the caller parses the message whole.
func classifyPGElided(sql string) ([]pgStmt, bool) {
	e, ok := elidePG(sql)
	if !ok {
		return nil, false
	}
	tree, err := pgparse.Parse(e.Text)
	if err != nil || !foundPG(e, tree) {
		return nil, false
	}
	out := make([]pgStmt, 0, len(tree.Stmts))
	for _, raw := range tree.Stmts {
		kind, a := classify(raw.Stmt)
		start := max(0, min(int(raw.StmtLocation), len(e.Text)))
		end := len(e.Text)
		if raw.StmtLen > 0 {
			end = max(start, min(start+int(raw.StmtLen), len(e.Text)))
		}
		start, end = trimSpan(sql, e.ToOrig(start), e.ToOrig(end))
		out = append(out, pgStmt{text: sql[start:end], start: start, end: end, kind: kind, a: a})
	}
	return out, true
}

// Classify parses a message of Postgres SQL with the Postgres parser
// and classifies each of its statements, resolving unqualified table names
// against public. A message of only whitespace and comments has no
// statements. The error is the parser's, for text it cannot read.
func Classify(sql string) ([]authz.Statement, error) {
	stmts, err := classifyPG(sql)
	if err != nil || len(stmts) == 0 {
		return nil, err
	}
	out := make([]authz.Statement, len(stmts))
	for i, m := range stmts {
		out[i] = *m.resolve(defaultPGSchema)
	}
	return out, nil
}

const defaultPGSchema = "public"

// pgCatalogData are the pg_catalog relations that hold data or secrets
// rather than a description of the schema: a table scope covers them like
// any table.
var pgCatalogData = setOf("pg_largeobject", "pg_authid", "pg_shadow", "pg_statistic", "pg_user_mapping",
	"pg_user_mappings", "pg_statistic_ext_data")

// pgCatalogFileViews read the server's configuration files, as the
// functions of the same names do.
var pgCatalogFileViews = setOf("pg_hba_file_rules", "pg_ident_file_mappings", "pg_file_settings")

// stmtSpan is where a statement lies in the message, by the parser's byte
// offsets, trimmed of white space. StmtLen 0 means "to the end". The
// offsets come from C; they are clamped rather than trusted, so odd input
// cannot make this panic.
func stmtSpan(sql string, raw *pg_query.RawStmt) (start, end int) {
	start = max(0, min(int(raw.StmtLocation), len(sql)))
	end = len(sql)
	if raw.StmtLen > 0 {
		end = max(start, min(start+int(raw.StmtLen), len(sql)))
	}
	return trimSpan(sql, start, end)
}

// trimSpan narrows sql[start:end] by what the Postgres scanner counts as
// white space at either end.
func trimSpan(sql string, start, end int) (int, int) {
	for start < end && pgSpace(sql[start]) {
		start++
	}
	for end > start && pgSpace(sql[end-1]) {
		end--
	}
	return start, end
}

// Query decides on one client message of Postgres SQL (possibly several
// statements separated by ';') under grant g, without session state:
// unqualified names resolve against public, and EXECUTE of a prepared
// statement is refused. A gateway should use a Session.
//
// Every statement gets a Decision, and the verdict is all or nothing: a
// message of several statements runs as one unit on the server (an implicit
// transaction, or with the first statements already done if it is not), so
// when any statement is refused every other statement of the message is
// refused too, with Rule "batch". Text the parser cannot read gives one
// Decision with Rule "unparseable" for the whole message. A message of only
// whitespace and comments is allowed with no statements.
func Query(g *authz.Grant, sql string) authz.Verdict {
	s := Session{stateless: true}
	return s.message(g, "", sql, false)
}

// unparseablePG refuses a message the parser could not read.
// Its Syntax, when the parser gave one, is the error the server would
// have answered.
func unparseablePG(sql string, err error) authz.Verdict {
	d := authz.Decision{
		Text:   sql,
		Rule:   "unparseable",
		Reason: unparseableReason(err),
		Class:  authz.Classification{Kind: "UNPARSEABLE", Required: authz.AccessAdmin},
	}
	if pe, ok := err.(*parseError); ok {
		d.Syntax = pe.syntax
	}
	return authz.Verdict{Statements: []authz.Decision{d}}
}

// resolve applies the default schema to a classified statement.
func (m *pgStmt) resolve(defSchema string) *authz.Statement {
	a := m.a
	st := &authz.Statement{Text: m.text, Facts: a.f}
	f := &st.Facts
	f.Tables = make([]authz.TableRef, 0, len(a.rels))
	var read, written, funcs []string
	for _, r := range a.rels {
		ref := authz.TableRef{Schema: r.schema, Name: r.name, Written: r.written}
		switch {
		case r.catalog != "":
			if f.Unresolved == "" {
				f.Unresolved = "it names " + r.catalog + "." + r.schema + "." + r.name + " with a database"
			}
			ref.Schema = r.catalog + "." + r.schema
		case r.schema == "":
			ref.Schema = defSchema
			if _, ok := pgCatalogRelations[r.name]; ok {
				ref.Schema = "pg_catalog"
			}
		}
		ref.System = ref.Schema == "information_schema" || ref.Schema == "pg_catalog" && !has(pgCatalogData, ref.Name)
		if ref.Schema == "pg_catalog" && has(pgCatalogFileViews, ref.Name) && !r.written {
			why := "reads " + ref.Name + ", which shows the database server's files"
			f.ServerFiles = why
			f.Needs = append(f.Needs, authz.Need{Level: authz.AccessAdmin, Why: why, Fn: -1})
		}
		f.Tables = append(f.Tables, ref)
		if r.written {
			written = append(written, ref.String())
		} else {
			read = append(read, ref.String())
		}
	}
	for i := range f.Funcs {
		if !strings.HasPrefix(f.Funcs[i].Name, "OPERATOR(") && f.Funcs[i].Name != "" {
			funcs = append(funcs, f.Funcs[i].Display())
		}
	}
	st.Class = authz.Classification{Kind: m.kind, TablesRead: sortedSet(read), TablesWritten: sortedSet(written), Functions: sortedSet(funcs)}
	st.Class.Required, st.Class.Why = f.Required()
	return st
}

func unparseableReason(err error) string {
	msg := err.Error()
	var pe *parseError
	if errors.As(err, &pe) {
		msg = pe.msg
		if pe.cursor > 0 {
			msg += fmt.Sprintf(" at position %d", pe.cursor)
		}
	}
	return "could not parse this message as Postgres SQL (" + authz.OneLine(msg) + "), so none of it was run"
}
