package postgres

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/airlockhq/airlock/authz/internal/elide"
)

// The walker reads the value of a constant of the message (a string,
// number or bit string, or a value the grammar may have taken from one:
// an option's argument, COPY's file name) only through the accessors in
// this file, and each marks the statement as depending on it
// (analysis.literal). A decision on a message none of whose statements
// is marked holds for every message that differs from it only in its
// constants, so the session may keep it under the message's masked key
// (mask.go); a marked one is kept under the exact text only.
//
// TestLiteralReadsMarked checks that no other file of the package reads
// the fields that hold such values. Names (of tables, functions,
// operators, settings, prepared statements) are not constants: the
// grammar takes them from identifiers and keywords only, which the
// masked key keeps as they are.

// literalValue is the value of a string constant as the walker may read
// it (elide.LiteralValue); it marks the statement.
func (a *analysis) literalValue(s string) (string, bool) {
	a.literal = true
	return elide.LiteralValue(s)
}

// stringConst reads a string constant, looking through casts
// ('role'::text). Finding that n is no string constant reads no value.
func (a *analysis) stringConst(n *pg_query.Node) (string, bool) {
	for n != nil {
		if tc := n.GetTypeCast(); tc != nil {
			n = tc.Arg
			continue
		}
		c := n.GetAConst()
		if c == nil || c.GetSval() == nil {
			return "", false
		}
		return a.literalValue(c.GetSval().Sval)
	}
	return "", false
}

// optionTrue reports whether an option's argument (EXPLAIN's ANALYZE) is
// true; no argument is true. The grammar makes the argument a String from
// a keyword (on, false) or from a string constant ('off') alike, and an
// Integer or Float from a number, so reading any argument marks the
// statement.
func (a *analysis) optionTrue(arg *pg_query.Node) bool {
	if arg == nil {
		return true
	}
	a.literal = true
	falseWord := func(s string) bool {
		switch strings.ToLower(s) {
		case "false", "off", "no", "0":
			return true
		}
		return false
	}
	switch {
	case arg.GetString_() != nil:
		return !falseWord(arg.GetString_().Sval)
	case arg.GetInteger() != nil:
		return arg.GetInteger().Ival != 0
	case arg.GetBoolean() != nil:
		return arg.GetBoolean().Boolval
	}
	if c := arg.GetAConst(); c != nil {
		switch {
		case c.GetBoolval() != nil:
			return c.GetBoolval().Boolval
		case c.GetIval() != nil:
			return c.GetIval().Ival != 0
		case c.GetSval() != nil:
			// A value elide.LiteralValue does not read (a long literal, a
			// placeholder) is none of the false words, so it is true here
			// either way, the stricter reading for the option this reads
			// (EXPLAIN's ANALYZE runs the statement).
			return !falseWord(c.GetSval().Sval)
		}
	}
	return true
}

// copyFile reports whether COPY names a file or a program (COPY ... TO
// '/tmp/x', FROM PROGRAM 'cmd') rather than STDIN or STDOUT. The parse tree
// holds the file name as a string, empty for STDIN and for an empty string
// constant alike, so this reads a constant whatever the answer.
func (a *analysis) copyFile(n *pg_query.CopyStmt) bool {
	a.literal = true
	return n.Filename != ""
}

// identName is the name in a String node that the grammar made from an
// identifier, a keyword or an operator, never from a constant: a part of
// a qualified name (func_name, any_name, qual_Op). It reads no constant.
func identName(n *pg_query.Node) string {
	return n.GetString_().GetSval()
}
