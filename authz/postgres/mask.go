package postgres

import (
	"strings"
	"unicode/utf8"
)

// The masked key: a message with each constant (string, bit string,
// number) replaced by a placeholder of its kind, so that every pgbench -S
// point SELECT, whatever its aid, finds the decision the first one got
// without parsing. The session keeps a decision under it only when no
// statement of the message read a constant's value (see literal.go);
// otherwise under the exact text, as before.
//
// Why two messages with the same masked key get the same decision when
// the decision read no constant: the key keeps every byte outside the
// constants as it is, and each placeholder is a NUL byte (which the
// scanner refuses in a message, as classifyPG does) and the constant's
// kind, so the two messages are the same text but for the constants, and
// each constant of one is a constant of the same kind at the same place
// in the other. The scanner below recognizes a constant only where
// Postgres's lexer (scan.l, standard_conforming_strings on, as the
// gateway keeps it) would start one, and ends it where the lexer would,
// and its kinds are the lexer's token kinds or finer (SCONST, split into
// plain, escape and dollar-quoted strings; BCONST; XCONST; ICONST; and
// FCONST, which includes an integer too large for int32); so the lexer
// gives both messages the same tokens but for the constants' values.
// The grammar sees only token kinds, except in the few places its actions
// check a constant's value (see maskPG), which the scanner refuses; so
// the parser gives both the same tree but for constant values and
// locations. The walker reads neither without marking the statement.
//
// The scanner is conservative: anything it does not fully follow gives
// no key, and the message is cached by its exact text. FuzzMaskedKey
// holds it to pg_query's own scanner and parser.

// maskConst is one constant of a message: [start, end) in the message,
// and its kind (the byte after the NUL of its placeholder).
type maskConst struct {
	start, end int
	kind       byte
}

// The kinds of constant, one placeholder each.
const (
	maskString  = 's' // '...'
	maskEscape  = 'e' // E'...'
	maskDollar  = 'd' // $tag$...$tag$
	maskBits    = 'b' // B'...'
	maskHex     = 'x' // X'...'
	maskInteger = 'i' // digits that fit an int32 (ICONST)
	maskFloat   = 'f' // other numbers (FCONST)
)

// maskLen is the length of a placeholder in the key.
const maskLen = 2

// maskPG appends the masked key of sql to key and its constants to consts.
// ok is false when the message has no constant or holds what the scanner
// does not follow:
//
//   - a NUL byte anywhere, a comment (-- or /*), a backslash, a byte that is not printable
//     ASCII or white space outside a string constant, invalid UTF-8
//     inside one, an unterminated string or quoted identifier, an empty
//     quoted identifier;
//   - U&'...' and U&"..." (and so UESCAPE), E'...' with an escape other
//     than \\, \b, \f, \n, \r, \t or a backslash before punctuation or a
//     letter that starts no escape (\x, \u, \U and octal escapes make
//     bytes that may be invalid; \' depends on the client encoding),
//     B'...' that is not binary digits, X'...' that is not hex digits, a
//     string continued on the next line ('a'<newline>'b' is one constant);
//   - a number glued to what follows it (1e, 1.5x, 0x1F, 1_000, 1..2, 1$),
//     a $ that is neither a parameter ($1) nor a dollar quote, a
//     parameter glued to what follows it, .. (only PL/pgSQL has it), a
//     psql variable (:name, :'name', :"name", :{?name});
//   - the two places where the grammar checks a constant's value itself,
//     so that its value decides whether the message parses: FLOAT(p)
//     (p must be 1 to 53, and picks float4 or float8) and ALTER [COLUMN]
//     n SET STATISTICS (n must be 1 to 32767). The scanner refuses
//     "float" before "(" and a number after "alter" or "column".
func maskPG(sql string, key []byte, consts []maskConst) ([]byte, []maskConst, bool) {
	// The parser reads a C string, up to a NUL byte; classifyPG refuses
	// the message.
	if strings.IndexByte(sql, 0) >= 0 {
		return key, consts, false
	}
	n := len(sql)
	last := 0  // sql[:last] is in key
	prev := "" // the previous token when it was a word (identifier or keyword)
	add := func(start, end int, kind byte) {
		key = append(key, sql[last:start]...)
		key = append(key, 0, kind)
		last = end
		consts = append(consts, maskConst{start, end, kind})
	}
	for i := 0; i < n; {
		c := sql[i]
		word := ""
		switch {
		case pgSpace(c):
			i++
			continue
		case c == '-' && i+1 < n && sql[i+1] == '-', c == '/' && i+1 < n && sql[i+1] == '*':
			return key, consts, false
		case c == '\'':
			end, ok := maskQuoted(sql, i, i, maskString)
			if !ok {
				return key, consts, false
			}
			add(i, end, maskString)
			i = end
		case c == '"':
			end, ok := quotedEnd(sql, i, false)
			if !ok || end == i+2 || !printableASCII(sql[i+1:end-1]) {
				return key, consts, false
			}
			i = end
		case c == '$' && i+1 < n && isDigit(sql[i+1]):
			// A parameter. The lexer refuses one glued to a word.
			j := i + 1
			for j < n && isDigit(sql[j]) {
				j++
			}
			if j < n && (isWordByte(sql[j]) || sql[j] >= 0x80) {
				return key, consts, false
			}
			i = j
		case c == '$':
			end, ok := maskDollarEnd(sql, i)
			if !ok {
				return key, consts, false
			}
			add(i, end, maskDollar)
			i = end
		case isDigit(c), c == '.' && i+1 < n && isDigit(sql[i+1]):
			end, kind, ok := maskNumber(sql, i)
			if !ok || strings.EqualFold(prev, "alter") || strings.EqualFold(prev, "column") {
				return key, consts, false
			}
			add(i, end, kind)
			i = end
		case c == '.' && i+1 < n && sql[i+1] == '.':
			return key, consts, false
		case isWordStart(c):
			j := i + 1
			for j < n && isWordByte(sql[j]) {
				j++
			}
			if j < n && sql[j] >= 0x80 {
				return key, consts, false
			}
			w := sql[i:j]
			if strings.EqualFold(w, "uescape") || (w == "u" || w == "U") && j < n && sql[j] == '&' {
				return key, consts, false
			}
			// N'...' is the keyword NCHAR and then a plain string, which
			// the next turn reads; any other word before a quote (date'x')
			// is a word and then a plain string too.
			if kind := quotePrefix(w); kind != 0 && j < n && sql[j] == '\'' {
				end, ok := maskQuoted(sql, i, j, kind)
				if !ok {
					return key, consts, false
				}
				add(i, end, kind)
				i = end
				break
			}
			word, i = w, j
		case c == ':':
			// :: and := are operators; psql would have replaced :name,
			// :'name', :"name" and :{?name} before sending, so a message
			// that still holds one was not meant for this lexer.
			if i+1 < n && (sql[i+1] == ':' || sql[i+1] == '=') {
				i += 2
				break
			}
			if i+1 < n && (isWordStart(sql[i+1]) || sql[i+1] >= 0x80 || sql[i+1] == '\'' || sql[i+1] == '"' || sql[i+1] == '{') {
				return key, consts, false
			}
			i++
		case c == '(' && strings.EqualFold(prev, "float"):
			return key, consts, false
		case c == '\\', c < 0x20, c >= 0x7f:
			return key, consts, false
		default:
			// An operator or punctuation: the same bytes lex the same way
			// in both messages, and none of them starts a constant.
			i++
		}
		prev = word
	}
	if len(consts) == 0 {
		return key, consts, false
	}
	key = append(key, sql[last:]...)
	return key, consts, true
}

// quotePrefix is the kind of the constant that word starts when a quote
// follows it at once (scan.l's xestart, xbstart, xhstart), else 0.
func quotePrefix(word string) byte {
	switch word {
	case "e", "E":
		return maskEscape
	case "b", "B":
		return maskBits
	case "x", "X":
		return maskHex
	}
	return 0
}

// maskQuoted returns the end of the quoted constant of kind that starts at
// start with its opening quote at quote; false when it does not end, holds
// what the scanner does not follow, or goes on after a newline.
func maskQuoted(sql string, start, quote int, kind byte) (int, bool) {
	end, ok := quotedEnd(sql, quote, kind == maskEscape)
	if !ok {
		return 0, false
	}
	body := sql[quote+1 : end-1]
	switch kind {
	case maskString:
		ok = utf8.ValidString(body)
	case maskEscape:
		ok = utf8.ValidString(body) && plainEscapes(body)
	case maskBits:
		ok = strings.Trim(body, "01") == ""
	case maskHex:
		ok = strings.Trim(body, "0123456789abcdefABCDEF") == ""
	}
	if !ok {
		return 0, false
	}
	// The lexer joins a quoted constant to a quote after white space with
	// a newline ('a'<newline>'b' is 'ab'); not followed here.
	newline := false
	j := end
	for ; j < len(sql) && pgSpace(sql[j]); j++ {
		newline = newline || sql[j] == '\n' || sql[j] == '\r'
	}
	if newline && j < len(sql) && sql[j] == '\'' {
		return 0, false
	}
	return end, true
}

// plainEscapes reports whether every backslash escape in the body of an
// E'...' string is one that makes one printable or white-space byte:
// \\, \b, \f, \n, \r, \t, or a backslash before another printable ASCII
// byte that starts no longer escape (not a digit, x, u or U) and is not a
// quote (whether \' is accepted depends on the client encoding).
func plainEscapes(body string) bool {
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		i++
		if i >= len(body) {
			return false
		}
		c := body[i]
		if c <= ' ' || c >= 0x7f || isDigit(c) || c == 'x' || c == 'u' || c == 'U' || c == '\'' {
			return false
		}
	}
	return true
}

// maskDollarEnd returns the end of the dollar-quoted string starting at
// i: $tag$...$tag$, the tag empty or an ASCII identifier without $.
func maskDollarEnd(sql string, i int) (int, bool) {
	j := i + 1
	for j < len(sql) && sql[j] != '$' {
		c := sql[j]
		if !(isWordStart(c) || j > i+1 && isDigit(c)) {
			return 0, false
		}
		j++
	}
	if j >= len(sql) {
		return 0, false
	}
	tag := sql[i : j+1]
	close := strings.Index(sql[j+1:], tag)
	if close < 0 {
		return 0, false
	}
	end := j + 1 + close + len(tag)
	if !utf8.ValidString(sql[j+1 : end-len(tag)]) {
		return 0, false
	}
	return end, true
}

// maskNumber returns the end and kind of the number starting at i:
// digits, a fraction, an exponent, as scan.l's decinteger, numeric and
// real (without the underscores PostgreSQL 16 allows, which the scanner
// does not follow). Whatever follows must not continue it: the lexer
// refuses a number glued to a word (trailing junk), reads 1..2 as 1, ..,
// 2, and 0x, 0o, 0b as other bases.
func maskNumber(sql string, i int) (int, byte, bool) {
	n := len(sql)
	j := i
	for j < n && isDigit(sql[j]) {
		j++
	}
	integer := j > i
	if j < n && sql[j] == '.' {
		integer = false
		j++
		if j < n && sql[j] == '.' {
			return 0, 0, false
		}
		for j < n && isDigit(sql[j]) {
			j++
		}
	}
	if j < n && (sql[j] == 'e' || sql[j] == 'E') {
		integer = false
		j++
		if j < n && (sql[j] == '+' || sql[j] == '-') {
			j++
		}
		if j >= n || !isDigit(sql[j]) {
			return 0, 0, false
		}
		for j < n && isDigit(sql[j]) {
			j++
		}
	}
	if j < n && (isWordByte(sql[j]) || sql[j] >= 0x80 || sql[j] == '.') {
		return 0, 0, false
	}
	if integer && fitsInt32(sql[i:j]) {
		return j, maskInteger, true
	}
	return j, maskFloat, true
}

// fitsInt32 reports whether decimal digits fit an int32, as the lexer's
// process_integer_literal decides between ICONST and FCONST.
func fitsInt32(digits string) bool {
	digits = strings.TrimLeft(digits, "0")
	const max = "2147483647"
	return len(digits) < len(max) || len(digits) == len(max) && digits <= max
}

func pgSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isWordStart and isWordByte are scan.l's ident_start and ident_cont,
// without the bytes of non-ASCII letters, which the scanner refuses.
func isWordStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isWordByte(c byte) bool { return isWordStart(c) || isDigit(c) || c == '$' }

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// maskToKey maps an offset of the message that is not inside a constant
// to the key; false when it is inside one.
func maskToKey(consts []maskConst, pos int) (int, bool) {
	delta := 0
	for _, c := range consts {
		if pos <= c.start {
			break
		}
		if pos < c.end {
			return 0, false
		}
		delta += c.end - c.start - maskLen
	}
	return pos - delta, true
}

// maskFromKey maps an offset of the key that is not inside a placeholder
// to the message whose constants are consts.
func maskFromKey(consts []maskConst, pos int) int {
	delta := 0
	for _, c := range consts {
		if pos <= c.start-delta {
			break
		}
		delta += c.end - c.start - maskLen
	}
	return pos + delta
}
