package postgres

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/airlockhq/airlock/authz/internal/elide"
	"github.com/airlockhq/airlock/authz/postgres/pgparse"
)

// Long literals, elided before parsing: see package authz/internal/elide
// for why that cannot change a decision. This is the Postgres scanner
// that finds them and the check that they came back from the parser.

// elideEscape is the replacement threshold on the length of an escape
// string (E'...'), quotes included: it holds at most ten bytes per value
// byte (\U0000XXXX), so its value is longer than elide.MaxReadLiteral.
const elideEscape = 10*elide.MaxReadLiteral + 16

// elidePG replaces the long string literals of a Postgres message ('...',
// E'...', $tag$...$tag$), with standard_conforming_strings on as the
// gateway keeps it. It reports false when there is nothing to replace or
// the message holds what the scanner leaves to the parser (a comment, an
// unterminated literal).
func elidePG(sql string) (*elide.Elision, bool) { return elidePGAt(sql, elide.Plain, elideEscape) }

// elidePGAt is elidePG replacing plain and dollar-quoted literals longer
// than plain bytes and escape strings longer than escape (tests use 0).
func elidePGAt(sql string, plain, escape int) (*elide.Elision, bool) {
	x := elide.Elider{Src: sql}
	n := len(sql)
	lastEnd := -1 // end of the last string literal, to see continuations
	literal := func(start, quote int, escapes, elidable bool, limit int) (int, bool) {
		end, ok := quotedEnd(sql, quote, escapes)
		if !ok {
			return 0, false
		}
		if elidable && end-start > limit && !pgContinued(sql, end) && !(lastEnd >= 0 && pgContinuation(sql, lastEnd, start)) {
			x.Replace(start, end)
		}
		lastEnd = end
		return end, true
	}
	for i := 0; i < n; {
		c := sql[i]
		var ok bool
		switch {
		case c == '-' && i+1 < n && sql[i+1] == '-', c == '/' && i+1 < n && sql[i+1] == '*':
			return nil, false
		case c == '"':
			if i, ok = quotedEnd(sql, i, false); !ok {
				return nil, false
			}
		case c == '\'':
			if i, ok = literal(i, i, false, true, plain); !ok {
				return nil, false
			}
		case c == '$' && i+1 < n && sql[i+1] >= '0' && sql[i+1] <= '9':
			// A parameter, $1.
			for i++; i < n && sql[i] >= '0' && sql[i] <= '9'; i++ {
			}
		case c == '$':
			tag := pgDollarTag(sql[i:])
			if tag == "" {
				i++
				continue
			}
			close := strings.Index(sql[i+len(tag):], tag)
			if close < 0 {
				return nil, false
			}
			end := i + len(tag) + close + len(tag)
			if end-i > plain {
				x.Replace(i, end)
			}
			i = end
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80:
			// An identifier or keyword. Before a quote: the prefix of an
			// escape string (E'...'); of a literal this leaves alone
			// (U&'...', B'...', X'...', N'...'); or a type name (date'...').
			j := i
			for j < n && elide.IsIdentByte(sql[j]) {
				j++
			}
			word := sql[i:j]
			switch {
			case j < n && sql[j] == '\'' && (word == "E" || word == "e"):
				j, ok = literal(i, j, true, true, escape)
			case j < n && sql[j] == '\'' && len(word) == 1 && strings.ContainsAny(word, "bBxXnN"):
				j, ok = literal(i, j, false, false, 0)
			case j+1 < n && sql[j] == '&' && sql[j+1] == '\'' && (word == "U" || word == "u"):
				j, ok = literal(i, j+1, false, false, 0)
			default:
				ok = true
			}
			if !ok {
				return nil, false
			}
			i = j
		case c >= '0' && c <= '9':
			// A number, with what may follow it in one (1e5, 0x1F, 1_000).
			for i++; i < n && (elide.IsIdentByte(sql[i]) || sql[i] == '.'); i++ {
			}
		default:
			i++
		}
	}
	return x.Done()
}

// pgContinuation reports whether the string literal at start continues the
// one that ended at prev (only white space with a newline between them).
func pgContinuation(sql string, prev, start int) bool {
	between := sql[prev:start]
	return strings.TrimLeft(between, " \t\n\r\f\v") == "" && strings.ContainsAny(between, "\n\r")
}

// pgStringEnd returns the offset after the quoted string starting at the
// quote at i: a doubled quote stands for one; in an escape string a
// backslash escapes the byte after it.
func pgStringEnd(sql string, i int, escapes bool) (int, bool) { return quotedEnd(sql, i, escapes) }

// quotedEnd returns the offset after the string or quoted identifier that
// starts with the quote at i: the same quote doubled stands for one, and
// with escapes a backslash escapes the byte after it.
func quotedEnd(sql string, i int, escapes bool) (int, bool) {
	q := sql[i]
	for j := i + 1; j < len(sql); j++ {
		switch sql[j] {
		case '\\':
			if escapes {
				j++
			}
		case q:
			if j+1 < len(sql) && sql[j+1] == q {
				j++
				continue
			}
			return j + 1, true
		}
	}
	return 0, false
}

// pgContinued reports whether the string literal ending at end goes on:
// Postgres joins two literals separated by white space with a newline.
// The parser check would notice a placeholder joined that way; this keeps
// the scanner from replacing part of a literal in the first place.
func pgContinued(sql string, end int) bool {
	newline := false
	for i := end; i < len(sql); i++ {
		switch sql[i] {
		case '\n', '\r':
			newline = true
		case ' ', '\t', '\f', '\v':
		case '\'':
			return newline
		default:
			return false
		}
	}
	return false
}

// pgDollarTag returns the $tag$ that s starts with, or "".
func pgDollarTag(s string) string {
	for j := 1; j < len(s); j++ {
		c := s[j]
		switch {
		case c == '$':
			return s[:j+1]
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80:
		case c >= '0' && c <= '9' && j > 1:
		default:
			return ""
		}
	}
	return ""
}

// foundPG reports whether every placeholder came back from the parser as
// an A_Const holding it, at its offset, and no placeholder anywhere else.
func foundPG(e *elide.Elision, tree *pg_query.ParseResult) bool {
	want := make(map[int32]string, len(e.Spans))
	for _, s := range e.Spans {
		want[int32(s.At)] = s.Value
	}
	ok := true
	var visit func(m protoreflect.Message)
	visit = func(m protoreflect.Message) {
		if !ok {
			return
		}
		switch n := m.Interface().(type) {
		case *pg_query.A_Const:
			if sv := n.GetSval(); sv != nil && strings.HasPrefix(sv.Sval, elide.PlaceholderPrefix) {
				if v, hit := want[n.Location]; hit && v == sv.Sval {
					delete(want, n.Location)
				} else {
					ok = false
				}
				return
			}
		case *pg_query.String:
			if strings.HasPrefix(n.Sval, elide.PlaceholderPrefix) {
				ok = false // a placeholder outside an expression
				return
			}
		}
		pgparse.Children(m.Interface(), "", visit)
	}
	visit(tree.ProtoReflect())
	return ok && len(want) == 0
}
