package postgres

import (
	"strings"

	"github.com/pganalyze/pg_query_go/v6/parser"

	"github.com/airlockhq/airlock/authz"
)

// The Postgres parser (pg_query is PostgreSQL's own raw parser) says what
// it could not read and where, but not the SQLSTATE, HINT or DETAIL the
// server sends with it. Most of its errors are 42601 (syntax_error)
// without either; pgParserErrors lists the others, as PostgreSQL's
// grammar, scanner and parser.c raise them, so that a client gets the
// error the server would have sent. TestPGParserErrorsComplete checks the
// list against the sources of the pg_query version in go.mod.

// pgParserError is one error the parser raises with a SQLSTATE other than
// 42601, or with a HINT or DETAIL.
type pgParserError struct {
	// format is the message's printf format as in PostgreSQL's source.
	format string
	// routine, when set, is the function that raises this message: the
	// same text is raised with different codes in different places.
	routine      string
	code         string
	hint, detail string
}

var pgParserErrors = []pgParserError{
	// gram.y
	{format: "CREATE ASSERTION is not yet implemented", code: "0A000"},
	{format: "dropping an enum value is not implemented", code: "0A000"},
	{format: "%s constraints cannot be marked DEFERRABLE", code: "0A000"},
	{format: "%s constraints cannot be marked NO INHERIT", code: "0A000"},
	{format: "%s constraints cannot be marked NOT VALID", code: "0A000"},
	{format: "CREATE EXTENSION ... FROM is no longer supported", code: "0A000"},
	{format: "UNIQUE predicate is not yet implemented", code: "0A000"},
	{format: "CREATE SCHEMA IF NOT EXISTS cannot include schema elements", code: "0A000"},
	{format: "an ordered-set aggregate with a VARIADIC direct argument must have one VARIADIC aggregated argument of the same data type", code: "0A000"},
	{format: "UNENCRYPTED PASSWORD is no longer supported", code: "0A000", hint: "Remove UNENCRYPTED to store the password in encrypted form instead."},
	{format: "aggregates cannot have output arguments", code: "0A000"},
	{format: "WITH CHECK OPTION not supported on recursive views", code: "0A000"},
	{format: "MATCH PARTIAL not yet implemented", code: "0A000"},
	{format: "a column list with %s is only supported for ON DELETE actions", code: "0A000"},
	{format: "current database cannot be changed", code: "0A000"},
	{format: "only string constants are supported in JSON_TABLE path specification", code: "0A000"},
	{format: "CREATE OR REPLACE CONSTRAINT TRIGGER is not supported", code: "0A000"},
	{format: "frame start cannot be UNBOUNDED FOLLOWING", code: "42P20"},
	{format: "frame starting from following row cannot end with current row", code: "42P20"},
	{format: "frame end cannot be UNBOUNDED PRECEDING", code: "42P20"},
	{format: "frame starting from current row cannot have preceding rows", code: "42P20"},
	{format: "frame starting from following row cannot have preceding rows", code: "42P20"},
	{format: "role name \"%s\" is reserved", code: "42939"},
	{format: "%s cannot be used as a role name here", code: "42939"},
	{format: "precision for type float must be at least 1 bit", code: "22023"},
	{format: "precision for type float must be less than 54 bits", code: "22023"},
	{format: "unrecognized JSON encoding: %s", code: "22023"},
	{format: "column number must be in range from 1 to %d", code: "22023"},
	{format: "unrecognized partitioning strategy \"%s\"", code: "22023"},
	{format: "modulus for hash partition provided more than once", code: "42710"},
	{format: "remainder for hash partition provided more than once", code: "42710"},
	{format: "unrecognized row security option \"%s\"", code: "42601", hint: "Only PERMISSIVE or RESTRICTIVE policies are supported currently."},
	{format: "missing argument", code: "42601", hint: "Use NONE to denote the missing argument of a unary operator."},
	{format: "LIMIT #,# syntax is not supported", code: "42601", hint: "Use separate LIMIT and OFFSET clauses."},
	{format: "invalid publication object list", code: "42601", detail: "One of TABLE or TABLES IN SCHEMA must be specified before a standalone table or schema name."},
	// parser.c: U&'...' UESCAPE strings, decoded after scanning.
	{format: "invalid Unicode escape", routine: "str_udeescape", code: "42601", hint: "Unicode escapes must be \\XXXX or \\+XXXXXX."},
	// scan.l
	{format: "invalid Unicode escape", code: "22025", hint: "Unicode escapes must be \\uXXXX or \\UXXXXXXXX."},
	{format: "unsafe use of string constant with Unicode escapes", code: "0A000", detail: "String constants with Unicode escapes cannot be used when \"standard_conforming_strings\" is off."},
	{format: "unsafe use of \\' in a string literal", code: "22P06", hint: "Use '' to write quotes in strings. \\' is insecure in client-only encodings."},
	// postgres.c: a statement nested deeper than the parser's stack. The
	// server's hint names its max_stack_depth, which airlock cannot know.
	{format: "stack depth limit exceeded", code: "54001"},
}

// pgSyntaxError is what the client should be told about a parser error:
// the server's message, position, code, hint and detail, and where the
// parser raised it.
func pgSyntaxError(e *parser.Error) *authz.SyntaxError {
	se := &authz.SyntaxError{Msg: e.Message, Pos: e.Cursorpos, Routine: e.Funcname, File: pgSourceFile(e.Filename), Line: e.Lineno}
	for i := range pgParserErrors {
		pe := &pgParserErrors[i]
		if (pe.routine == "" || pe.routine == e.Funcname) && matchFormat(pe.format, e.Message) {
			se.Code, se.Hint, se.Detail = pe.code, pe.hint, pe.detail
			break
		}
	}
	if se.Code == "42601" {
		se.Code = "" // the default
	}
	return se
}

// pgSourceFile is a PostgreSQL source file's name as the server reports
// it: pg_query names the files it copied from PostgreSQL by their path
// (src_backend_parser_parser.c for src/backend/parser/parser.c).
func pgSourceFile(name string) string {
	if rest, ok := strings.CutPrefix(name, "src_"); ok {
		if i := strings.LastIndexByte(rest, '_'); i >= 0 {
			return rest[i+1:]
		}
	}
	return name
}

// matchFormat reports whether msg is what the printf format f prints for
// some arguments. Every conversion matches any text; the literal text
// between conversions must appear in order.
func matchFormat(f, msg string) bool {
	var lits []string
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			b.WriteByte(f[i])
			continue
		}
		if i+1 < len(f) && f[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		// Skip flags, width, precision and length up to the verb.
		for i++; i < len(f) && strings.IndexByte("-+ #0123456789.*hlzjt", f[i]) >= 0; i++ {
		}
		lits = append(lits, b.String())
		b.Reset()
	}
	lits = append(lits, b.String())
	if len(lits) == 1 {
		return msg == lits[0]
	}
	if !strings.HasPrefix(msg, lits[0]) {
		return false
	}
	rest := msg[len(lits[0]):]
	last := lits[len(lits)-1]
	for _, l := range lits[1 : len(lits)-1] {
		i := strings.Index(rest, l)
		if i < 0 {
			return false
		}
		rest = rest[i+len(l):]
	}
	return strings.HasSuffix(rest, last)
}
