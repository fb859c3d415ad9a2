package authz

import (
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
)

// parseError is text the Postgres parser could not read.
type parseError struct {
	msg string
	// cursor is the 1-based byte position of the error, 0 when unknown.
	cursor int
}

func (e *parseError) Error() string {
	if e.cursor > 0 {
		return fmt.Sprintf("authz: postgres: %s at position %d", e.msg, e.cursor)
	}
	return "authz: postgres: " + e.msg
}

// Statement is one statement of a client message as the classifier read
// it, before any grant is applied.
type Statement struct {
	// Text is the statement's slice of the message, trimmed of surrounding
	// whitespace.
	Text  string
	Class Classification
	// refusal, when set, refuses the statement under every grant: it would
	// run SQL airlock cannot see, such as a prepared statement by name.
	refusal string
}

// ClassifyPostgres parses a message of Postgres SQL with the Postgres parser
// and classifies each of its statements. A message of only whitespace and
// comments has no statements. The error is the parser's, for text it cannot
// read.
func ClassifyPostgres(sql string) ([]Statement, error) {
	// The parser takes a C string, so it would read only up to a NUL byte
	// and judge a prefix of what the server is sent.
	if i := strings.IndexByte(sql, 0); i >= 0 {
		return nil, &parseError{msg: "the message contains a NUL byte", cursor: i + 1}
	}
	tree, err := pg_query.Parse(sql)
	if err != nil {
		pe := &parseError{msg: err.Error()}
		if perr, ok := err.(*parser.Error); ok {
			pe.cursor = perr.Cursorpos
		}
		return nil, pe
	}
	if len(tree.Stmts) == 0 {
		return nil, nil
	}
	out := make([]Statement, 0, len(tree.Stmts))
	for _, raw := range tree.Stmts {
		class, refusal := classify(raw.Stmt)
		out = append(out, Statement{Text: stmtText(sql, raw), Class: class, refusal: refusal})
	}
	return out, nil
}

// stmtText cuts a statement out of the message by the parser's byte
// offsets. StmtLen 0 means "to the end". The offsets come from C; they are
// clamped rather than trusted, so odd input cannot make this panic.
func stmtText(sql string, raw *pg_query.RawStmt) string {
	start := max(0, min(int(raw.StmtLocation), len(sql)))
	end := len(sql)
	if raw.StmtLen > 0 {
		end = max(start, min(start+int(raw.StmtLen), len(sql)))
	}
	return trimSQLSpace(sql[start:end])
}

// trimSQLSpace trims what the Postgres scanner counts as white space.
func trimSQLSpace(s string) string {
	isSpace := func(c byte) bool {
		return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
	}
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// Postgres decides on one client message of Postgres SQL (possibly several
// statements separated by ';') under grant g.
//
// Every statement gets a Decision, and the verdict is all or nothing: a
// message of several statements runs as one unit on the server (an implicit
// transaction, or with the first statements already done if it is not), so
// when any statement is refused every other statement of the message is
// refused too, with Rule "batch". Text the parser cannot read gives one
// Decision with Rule "unparseable" for the whole message. A message of only
// whitespace and comments is allowed with no statements.
func Postgres(g *Grant, sql string) Verdict {
	stmts, err := ClassifyPostgres(sql)
	if err != nil {
		return Verdict{Statements: []Decision{{
			Text:   sql,
			Rule:   "unparseable",
			Reason: unparseableReason(err),
			Class:  Classification{Kind: "UNPARSEABLE", Required: AccessAdmin},
		}}}
	}
	if len(stmts) == 0 {
		return Verdict{Allow: true}
	}
	v := Verdict{Allow: true, Statements: make([]Decision, len(stmts))}
	refused := 0
	for i, s := range stmts {
		d := decide(g, s)
		if !d.Allow && refused == 0 {
			refused = i + 1
		}
		v.Statements[i] = d
	}
	if refused == 0 {
		return v
	}
	v.Allow = false
	for i := range v.Statements {
		d := &v.Statements[i]
		if d.Allow {
			d.Allow, d.Rule = false, "batch"
			d.Reason = fmt.Sprintf("not executed: statement %d of this message was refused", refused)
		}
	}
	return v
}

// decide applies g to one statement, ignoring the rest of its message.
func decide(g *Grant, s Statement) Decision {
	d := Decision{Text: s.Text, Class: s.Class}
	switch {
	case g == nil || g.Access <= AccessNone || g.State != "" && g.State != StateActive:
		d.Rule, d.Reason = "no-grant", noGrantReason(g, s.Class)
	case s.refusal != "":
		d.Rule, d.Reason = "indirection", s.refusal
	case s.Class.Required <= g.Access:
		d.Allow, d.Rule = true, "access-level"
	default:
		d.Rule, d.Reason = "access-level", accessReason(g, s.Class)
	}
	return d
}

// SafePostgresEncoding reports whether a client encoding keeps the
// authorizer's reading of statement text the same as the server's. A
// gateway must not let a session use any other.
func SafePostgresEncoding(enc string) bool { return asciiSafeEncoding(enc) }
