package authz

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pingcap/tidb/pkg/parser/ast"
	"github.com/pingcap/tidb/pkg/parser/test_driver"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/airlockhq/airlock/authz/pgparse"
)

// Long literals, elided before parsing.
//
// A parser copies what it reads: pg_query copies a message into C, its
// parse tree holds each string literal again, and its JSON output (which
// the Go side copies once more) holds it a third time; the TiDB lexer
// copies a literal while unescaping it. A 200 MB statement that is one
// long literal (a document, an image in hex) then cost the gateway seven
// times its size. So in a long message, each long string literal is
// replaced by a short placeholder literal before parsing, and the parser
// reads the rest as it is.
//
// Why that cannot change a decision:
//
//  1. The authorizer never reads the value of a string literal longer
//     than maxReadLiteral, nor of a placeholder: every place that reads
//     one (literalValue) treats it as not a literal, in both paths, and a
//     decision that would read it gets the strictest outcome there
//     (set_config of a name that is not a literal needs admin, and so on).
//     Only long literals are replaced (thresholds below make sure their
//     value is longer than maxReadLiteral whatever escapes they hold), so
//     what the authorizer reads of the message is the same in both paths.
//  2. The reduced message differs from the message only in the replaced
//     literals, and each placeholder must come back from the parser as an
//     expression constant (a Postgres A_Const, a TiDB ValueExpr) holding
//     exactly the placeholder, at exactly the offset where it was put.
//     The text before a placeholder is the same in both messages, so the
//     lexer is in the same state at that offset in both: it starts a
//     string token there in the reduced message, hence in the message too,
//     and the elision scanner ends that token by the lexer's own rules
//     (tested against the parsers' scanners). Anything else (a literal in
//     an option, a file name, a comment the scanner did not expect, a
//     placeholder joined to the next literal) fails the check, and the
//     message is parsed whole.
//
// Messages shorter than elideMin are never elided, so the per-statement
// path of ordinary statements is unchanged; so are messages holding a
// comment (the scanner does not follow comments: it leaves them to the
// parser and parses such a message whole).
const (
	// elideMin is the shortest message that is considered for elision.
	elideMin = 64 << 10
	// maxReadLiteral is the longest string literal whose value the
	// authorizer reads: no setting name, setting value, option or
	// character set it needs is anywhere near as long.
	maxReadLiteral = 4 << 10
	// placeholderPrefix starts every placeholder's value.
	placeholderPrefix = "airlock-elided-literal-"
)

// literalValue is the value of a string literal as the authorizer may
// read it: not when it is longer than maxReadLiteral or a placeholder of
// an elided literal (see the package comment above).
func literalValue(s string) (string, bool) {
	if len(s) > maxReadLiteral || strings.HasPrefix(s, placeholderPrefix) {
		return "", false
	}
	return s, true
}

// elision is a message with its long literals replaced.
type elision struct {
	text  string
	spans []elidedSpan
}

// elidedSpan is one replaced literal: [start, end) in the message,
// [at, at+len(token)) in the reduced text, and its placeholder's value.
type elidedSpan struct {
	start, end, at, atEnd int
	value                 string
}

// toOrig maps an offset in the reduced text to the message, for offsets
// outside the placeholders (statement boundaries).
func (e *elision) toOrig(pos int) int {
	delta := 0
	for _, s := range e.spans {
		if pos < s.atEnd {
			if pos > s.at {
				return s.start
			}
			break
		}
		delta = s.end - s.atEnd
	}
	return pos + delta
}

// elider builds the reduced text.
type elider struct {
	src  string
	b    strings.Builder
	last int
	e    elision
}

func (x *elider) replace(start, end int) {
	if x.e.spans == nil {
		x.b.Grow(len(x.src) / 16)
	}
	x.b.WriteString(x.src[x.last:start])
	v := placeholderPrefix + strconv.Itoa(len(x.e.spans)+1)
	at := x.b.Len()
	x.b.WriteByte('\'')
	x.b.WriteString(v)
	x.b.WriteByte('\'')
	x.e.spans = append(x.e.spans, elidedSpan{start: start, end: end, at: at, atEnd: x.b.Len(), value: v})
	x.last = end
}

func (x *elider) done() (*elision, bool) {
	if len(x.e.spans) == 0 {
		return nil, false
	}
	x.b.WriteString(x.src[x.last:])
	x.e.text = x.b.String()
	return &x.e, true
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// Replacement thresholds on a literal's length in the message, quotes
// included, so that its value is longer than maxReadLiteral however it is
// escaped: a doubled quote is two bytes for one; a Postgres escape string
// holds at most ten bytes per value byte (\U0000XXXX).
const (
	elidePlain  = 2*maxReadLiteral + 16
	elideEscape = 10*maxReadLiteral + 16
)

// elidePG replaces the long string literals of a Postgres message ('...',
// E'...', $tag$...$tag$), with standard_conforming_strings on as the
// gateway keeps it. It reports false when there is nothing to replace or
// the message holds what the scanner leaves to the parser (a comment, an
// unterminated literal).
func elidePG(sql string) (*elision, bool) { return elidePGAt(sql, elidePlain, elideEscape) }

// elidePGAt is elidePG replacing plain and dollar-quoted literals longer
// than plain bytes and escape strings longer than escape (tests use 0).
func elidePGAt(sql string, plain, escape int) (*elision, bool) {
	x := elider{src: sql}
	n := len(sql)
	lastEnd := -1 // end of the last string literal, to see continuations
	literal := func(start, quote int, escapes, elidable bool, limit int) (int, bool) {
		end, ok := quotedEnd(sql, quote, escapes)
		if !ok {
			return 0, false
		}
		if elidable && end-start > limit && !pgContinued(sql, end) && !(lastEnd >= 0 && pgContinuation(sql, lastEnd, start)) {
			x.replace(start, end)
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
				x.replace(i, end)
			}
			i = end
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80:
			// An identifier or keyword. Before a quote: the prefix of an
			// escape string (E'...'); of a literal this leaves alone
			// (U&'...', B'...', X'...', N'...'); or a type name (date'...').
			j := i
			for j < n && isIdentByte(sql[j]) {
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
			for i++; i < n && (isIdentByte(sql[i]) || sql[i] == '.'); i++ {
			}
		default:
			i++
		}
	}
	return x.done()
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
func (e *elision) foundPG(tree *pg_query.ParseResult) bool {
	want := make(map[int32]string, len(e.spans))
	for _, s := range e.spans {
		want[int32(s.at)] = s.value
	}
	ok := true
	var visit func(m protoreflect.Message)
	visit = func(m protoreflect.Message) {
		if !ok {
			return
		}
		switch n := m.Interface().(type) {
		case *pg_query.A_Const:
			if sv := n.GetSval(); sv != nil && strings.HasPrefix(sv.Sval, placeholderPrefix) {
				if v, hit := want[n.Location]; hit && v == sv.Sval {
					delete(want, n.Location)
				} else {
					ok = false
				}
				return
			}
		case *pg_query.String:
			if strings.HasPrefix(n.Sval, placeholderPrefix) {
				ok = false // a placeholder outside an expression
				return
			}
		}
		pgparse.Children(m.Interface(), "", visit)
	}
	visit(tree.ProtoReflect())
	return ok && len(want) == 0
}

// elideMySQL replaces the long string literals ('...', and "..." unless
// ANSI_QUOTES) of a MySQL message. It reports false when there is nothing
// to replace or the message holds what the scanner leaves to myLex and the
// parser (a comment, a NUL byte, an unterminated quote).
func elideMySQL(sql string, o myLexOpts) (*elision, bool) { return elideMySQLAt(sql, o, elidePlain) }

// elideMySQLAt is elideMySQL replacing literals longer than plain bytes.
func elideMySQLAt(sql string, o myLexOpts, plain int) (*elision, bool) {
	if strings.IndexByte(sql, 0) >= 0 {
		return nil, false
	}
	x := elider{src: sql}
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == '#', c == '/' && i+1 < n && sql[i+1] == '*',
			c == '-' && i+1 < n && sql[i+1] == '-':
			return nil, false
		case c == '\'' || c == '"' || c == '`':
			end, err := myQuoted(sql, i, o)
			if err != nil {
				return nil, false
			}
			literal := c == '\'' || c == '"' && !o.ansiQuotes
			if literal && !(i > 0 && isIdentByte(sql[i-1])) && end-i > plain {
				x.replace(i, end)
			}
			i = end
		default:
			i++
		}
	}
	return x.done()
}

// foundMySQL reports how many placeholders of the segment [from, to) of
// the reduced text came back from the parser as a ValueExpr holding them
// at their offsets (stmt was parsed from that segment); false when one did
// not, or a placeholder stands anywhere else.
func (e *elision) foundMySQL(stmt ast.Node, from, to int) (int, bool) {
	want := map[int]string{}
	for _, s := range e.spans {
		if s.at >= from && s.atEnd <= to {
			want[s.at-from] = s.value
		} else if s.at < to && s.atEnd > from {
			return 0, false
		}
	}
	n := len(want)
	v := &placeholderFinder{want: want, ok: true}
	stmt.Accept(v)
	return n, v.ok && len(v.want) == 0
}

type placeholderFinder struct {
	want map[int]string
	ok   bool
}

func (v *placeholderFinder) Enter(n ast.Node) (ast.Node, bool) {
	if x, isValue := n.(*test_driver.ValueExpr); isValue {
		if s, isString := x.GetValue().(string); isString && strings.HasPrefix(s, placeholderPrefix) {
			if w, hit := v.want[x.OriginTextPosition()]; hit && w == s {
				delete(v.want, x.OriginTextPosition())
			} else {
				v.ok = false
			}
		}
	}
	return n, !v.ok
}

func (v *placeholderFinder) Leave(n ast.Node) (ast.Node, bool) { return n, v.ok }
