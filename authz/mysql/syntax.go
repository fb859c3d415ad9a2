package mysql

import (
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/airlockhq/airlock/authz"
)

// MySQL's syntax error as the server words it. When a message cannot be
// parsed, the client is owed what the server would have said (error 1064,
// ER_PARSE_ERROR):
//
//	You have an error in your SQL syntax; check the manual that corresponds
//	to your MariaDB server version for the right syntax to use near '...' at
//	line N
//
// The server fills it from where its lexer stood when the grammar gave up:
// near is the rest of the whole message from the start of the token it
// could not take (later statements included, the message's trailing ';'
// and white space not), cut at a NUL as a C string is, with bytes the
// server cannot convert shown as '?' and cut to 80 bytes (MariaDB: 77 and
// "..."); the line counts the newlines from the start of that statement
// (after its leading white space) to the token, outside quoted strings and
// identifiers. airlock finds the token with its own parsers, which agree
// with the server's grammar on where most errors are.

// mySyntaxAt is the server's syntax error for a message whose statement
// starting at stmtStart could not be read from byte offset pos on.
func mySyntaxAt(sql string, stmtStart, pos int, o myLexOpts) *authz.SyntaxError {
	end := len(sql)
	for end > 0 && (sql[end-1] == ';' || isMySpace(sql[end-1])) {
		end--
	}
	pos = min(max(pos, 0), end)
	stmtStart = min(max(stmtStart, 0), pos)
	for stmtStart < pos && isMySpace(sql[stmtStart]) {
		stmtStart++
	}
	flavor := "MySQL"
	if o.server.mariadb {
		flavor = "MariaDB"
	}
	msg := "You have an error in your SQL syntax; check the manual that corresponds to your " + flavor +
		" server version for the right syntax to use near '" + myNearText(sql[pos:end], o.server.mariadb) +
		"' at line " + strconv.Itoa(myLineAt(sql, stmtStart, pos, o))
	return &authz.SyntaxError{Msg: msg, Pos: utf8.RuneCountInString(sql[:pos]) + 1}
}

// myNearText is the near '...' part: up to the first NUL, converted to
// the server's utf8mb3 (invalid bytes and 4-byte characters become '?'),
// then cut to 80 bytes on a character boundary; MariaDB cuts a longer one
// to 77 and adds "...".
func myNearText(s string, mariadb bool) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() <= 80; {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 || size == 4 {
			b.WriteByte('?')
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	out := b.String()
	if len(out) <= 80 {
		return out
	}
	limit := 80
	if mariadb {
		limit = 77
	}
	cut := 0
	for cut < len(out) {
		_, size := utf8.DecodeRuneInString(out[cut:])
		if cut+size > limit {
			break
		}
		cut += size
	}
	if mariadb {
		return out[:cut] + "..."
	}
	return out[:cut]
}

// myLineAt is the server's line number of byte offset pos in the
// statement starting at from: 1 plus the newlines between them that lie
// outside quoted strings and identifiers (those in comments count).
func myLineAt(sql string, from, pos int, o myLexOpts) int {
	line := 1
	myScanText(sql, from, pos, o, func(i int, in myTextPart) bool {
		if sql[i] == '\n' && in != myQuotedPart {
			line++
		}
		return true
	})
	return line
}

// myParamMarker returns the offset of the first '?' in sql[from:to] that
// the server reads as a token, or -1. Outside a prepared statement the
// server's lexer takes it for a character no rule accepts, where the TiDB
// parser takes it for a parameter.
func myParamMarker(sql string, from, to int, o myLexOpts) int {
	at := -1
	myScanText(sql, from, to, o, func(i int, in myTextPart) bool {
		if sql[i] == '?' && in == myCodePart {
			at = i
			return false
		}
		return true
	})
	return at
}

// myTextPart is what a byte of a message is part of.
type myTextPart int

const (
	myCodePart myTextPart = iota
	myQuotedPart
	myCommentPart
)

// myScanText calls visit for each byte of sql[from:to] with what it is
// part of, until visit returns false.
func myScanText(sql string, from, to int, o myLexOpts, visit func(i int, in myTextPart) bool) {
	span := func(a, b int, in myTextPart) bool {
		for k := a; k < min(b, to); k++ {
			if !visit(k, in) {
				return false
			}
		}
		return true
	}
	for i := from; i < to; {
		c := sql[i]
		end, in := i+1, myCodePart
		switch {
		case c == '\'' || c == '"' || c == '`':
			in = myQuotedPart
			var err *myLexError
			if end, err = myQuoted(sql, i, o); err != nil {
				end = len(sql)
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			in = myCommentPart
			if k := strings.Index(sql[i+2:], "*/"); k >= 0 {
				end = i + 2 + k + 2
			} else {
				end = len(sql)
			}
		case c == '#' || c == '-' && i+1 < len(sql) && sql[i+1] == '-' && (i+2 == len(sql) || sql[i+2] <= ' ' || sql[i+2] == 0x7f):
			in = myCommentPart
			if k := strings.IndexByte(sql[i:], '\n'); k >= 0 {
				end = i + k
			} else {
				end = len(sql)
			}
		}
		if !span(i, end, in) {
			return
		}
		i = end
	}
}

// tidbSyntaxRE matches the TiDB parser's syntax error, which names the
// rest of the text from the token it could not take:
// `line 1 column 5 near "SELEC 1" ` (with " (total length N)" after the
// quote when that rest was cut at 2048 bytes).
var tidbSyntaxRE = regexp.MustCompile(`^line \d+ column \d+ near "`)

// tidbSyntaxOffset returns the byte offset in text where the TiDB parser
// found a syntax error, when err is one.
func tidbSyntaxOffset(err error, text string) (int, bool) {
	msg := err.Error()
	loc := tidbSyntaxRE.FindStringIndex(msg)
	if loc == nil {
		return 0, false
	}
	rest := msg[loc[1]:]
	if val, ok := strings.CutSuffix(rest, `" `); ok && strings.HasSuffix(text, val) {
		return len(text) - len(val), true
	}
	if i := strings.LastIndex(rest, `" (total length `); i >= 0 && strings.HasSuffix(rest, ")") {
		n, err := strconv.Atoi(rest[i+len(`" (total length `) : len(rest)-1])
		if err == nil && n <= len(text) && strings.HasPrefix(text[len(text)-n:], rest[:i]) {
			return len(text) - n, true
		}
	}
	return 0, false
}
