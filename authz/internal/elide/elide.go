// Package elide replaces the long string literals of a SQL message with
// short placeholders before it is parsed, for the SQL dialects of
// authz/postgres and authz/mysql; each dialect has its own scanner and
// its own check that the placeholders came back from its parser.
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
//     than MaxReadLiteral, nor of a placeholder: every place that reads
//     one (LiteralValue) treats it as not a literal, in both paths, and a
//     decision that would read it gets the strictest outcome there
//     (set_config of a name that is not a literal needs admin, and so on).
//     Only long literals are replaced (Plain and the dialects' own thresholds make sure their
//     value is longer than MaxReadLiteral whatever escapes they hold), so
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
// Messages shorter than Min are never elided, so the per-statement
// path of ordinary statements is unchanged; so are messages holding a
// comment (the scanner does not follow comments: it leaves them to the
// parser and parses such a message whole).
package elide

import (
	"strconv"
	"strings"
)

const (
	// Min is the shortest message that is considered for elision.
	Min = 64 << 10
	// MaxReadLiteral is the longest string literal whose value the
	// authorizer reads: no setting name, setting value, option or
	// character set it needs is anywhere near as long.
	MaxReadLiteral = 4 << 10
	// PlaceholderPrefix starts every placeholder's value.
	PlaceholderPrefix = "airlock-elided-literal-"
	// Plain is the replacement threshold on a plain literal's length in
	// the message, quotes included, so that its value is longer than
	// MaxReadLiteral however it is escaped: a doubled quote is two bytes
	// for one.
	Plain = 2*MaxReadLiteral + 16
)

// LiteralValue is the value of a string literal as the authorizer may
// read it: not when it is longer than MaxReadLiteral or a placeholder of
// an elided literal (see the package comment).
func LiteralValue(s string) (string, bool) {
	if len(s) > MaxReadLiteral || strings.HasPrefix(s, PlaceholderPrefix) {
		return "", false
	}
	return s, true
}

// Elision is a message with its long literals replaced.
type Elision struct {
	// Text is the reduced message.
	Text  string
	Spans []Span
}

// Span is one replaced literal: [Start, End) in the message,
// [At, AtEnd) in the reduced text, and its placeholder's value.
type Span struct {
	Start, End, At, AtEnd int
	Value                 string
}

// ToOrig maps an offset in the reduced text to the message, for offsets
// outside the placeholders (statement boundaries).
func (e *Elision) ToOrig(pos int) int {
	delta := 0
	for _, s := range e.Spans {
		if pos < s.AtEnd {
			if pos > s.At {
				return s.Start
			}
			break
		}
		delta = s.End - s.AtEnd
	}
	return pos + delta
}

// Elider builds the reduced text of Src, the message: a dialect's scanner
// calls Replace for each literal to elide, in order, then Done.
type Elider struct {
	Src  string
	b    strings.Builder
	last int
	e    Elision
}

// Replace replaces the literal at [start, end) of the message.
func (x *Elider) Replace(start, end int) {
	if x.e.Spans == nil {
		x.b.Grow(len(x.Src) / 16)
	}
	x.b.WriteString(x.Src[x.last:start])
	v := PlaceholderPrefix + strconv.Itoa(len(x.e.Spans)+1)
	at := x.b.Len()
	x.b.WriteByte('\'')
	x.b.WriteString(v)
	x.b.WriteByte('\'')
	x.e.Spans = append(x.e.Spans, Span{Start: start, End: end, At: at, AtEnd: x.b.Len(), Value: v})
	x.last = end
}

// Done returns the elision; false when nothing was replaced.
func (x *Elider) Done() (*Elision, bool) {
	if len(x.e.Spans) == 0 {
		return nil, false
	}
	x.b.WriteString(x.Src[x.last:])
	x.e.Text = x.b.String()
	return &x.e, true
}

// IsIdentByte reports whether c may continue an identifier or keyword,
// as both scanners read them.
func IsIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}
