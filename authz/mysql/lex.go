package mysql

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The MySQL lexical pass. The server, not the parser airlock uses, decides
// what a message means, and the two differ on comments: MySQL runs the
// content of /*!NNNNN ... */ only when its version is at most the
// server's (and MariaDB ignores 50700-99999, MySQL 5.7's range), MariaDB
// runs /*M!NNNNN ... */ that MySQL ignores, and the TiDB parser runs every
// /*! ... */ and drops every /*M! ... */. So airlock reads comments itself,
// the way the server will, and hands the parser text without any: plain
// comments blanked, executable ones either blanked (the server skips them)
// or unwrapped (the server runs them). Blanking keeps byte offsets, so a
// statement's text is still a slice of the message.
//
// Where the server's reading depends on a version airlock does not know,
// or where the two readings of an executable comment could disagree on
// where it ends (a quote, a nested comment or a ';' inside it), the
// message is refused: see myLexError.

// myServer is what airlock knows of the upstream server.
type myServer struct {
	// mariadb is set for MariaDB; known is set when the flavor and
	// version are known at all.
	mariadb, known bool
	// version is the server's MYSQL_VERSION_ID: 80036 for MySQL 8.0.36,
	// 101106 for MariaDB 10.11.6.
	version int
}

// parseServerVersion reads the version string of the server's handshake:
// "8.0.36", "8.0.36-0ubuntu0.22.04.1", "5.5.5-10.11.6-MariaDB-0+deb12u1",
// "11.4.2-MariaDB". An empty or unreadable string gives an unknown server.
func parseServerVersion(v string) myServer {
	s := myServer{mariadb: strings.Contains(strings.ToLower(v), "mariadb")}
	if s.mariadb {
		v = strings.TrimPrefix(v, "5.5.5-")
	}
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 3 {
		return myServer{}
	}
	num := func(p string) (int, bool) {
		end := 0
		for end < len(p) && p[end] >= '0' && p[end] <= '9' {
			end++
		}
		n, err := strconv.Atoi(p[:end])
		return n, err == nil && n < 100
	}
	major, ok1 := num(parts[0])
	minor, ok2 := num(parts[1])
	patch, ok3 := num(parts[2])
	if !ok1 || !ok2 || !ok3 {
		return myServer{}
	}
	s.known = true
	s.version = major*10000 + minor*100 + patch
	return s
}

// myLexOpts are the session settings that change how text is read.
type myLexOpts struct {
	// ansiQuotes (sql_mode ANSI_QUOTES) makes "..." an identifier, in
	// which a backslash is not an escape.
	ansiQuotes bool
	// noBackslashEscapes (sql_mode NO_BACKSLASH_ESCAPES) makes a backslash
	// an ordinary character in strings.
	noBackslashEscapes bool
	server             myServer
}

// myLexError is text airlock refuses before parsing.
type myLexError struct {
	// rule is "unparseable" (the server would not read it either) or
	// "lexical" (the server's reading is ambiguous to airlock).
	rule string
	msg  string
	pos  int // 0-based byte offset
	// stmt is where the statement holding pos starts (after the ';'
	// before it), for the server's syntax error.
	stmt int
}

func (e *myLexError) Error() string {
	return fmt.Sprintf("authz: mysql: %s at position %d", e.msg, e.pos+1)
}

// mySegment is one statement of a message.
type mySegment struct {
	// start and end delimit the statement in the message, without the
	// ';' and trimmed of white space.
	start, end int
	// semi is the offset of the ';' that ends the statement, or -1 when
	// the message ends it.
	semi int
	// clean is the statement with comments blanked and executable
	// comments unwrapped, for the parser.
	clean string
	// setVarHint is set when an optimizer hint comment holds SET_VAR,
	// which sets a server variable for the statement.
	setVarHint bool
}

func isMySpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// myLex splits a message into statements and cleans each of comments.
func myLex(sql string, o myLexOpts) ([]mySegment, *myLexError) {
	segs, _, err := myLexClean(sql, o)
	return segs, err
}

// myLexClean is myLex that also returns the whole cleaned message, of
// which each segment's clean text is a slice.
func myLexClean(sql string, o myLexOpts) ([]mySegment, string, *myLexError) {
	clean := []byte(sql)
	blank := func(from, to int) {
		for k := from; k < to; k++ {
			if clean[k] != '\n' {
				clean[k] = ' '
			}
		}
	}
	segStart := 0
	segs, err := myLexSegments(sql, o, clean, blank, &segStart)
	if err != nil {
		err.stmt = segStart
		return nil, "", err
	}
	// Blanking a comment must not make one: in "--/**/x" the server reads
	// two minus signs, but blanked it reads "--    x", a comment to the
	// parser. So the cleaned text must hold no comment at all.
	if pos := commentIn(clean, o); pos >= 0 {
		return nil, "", &myLexError{rule: "lexical", msg: "comments arranged so that airlock's parser would read them differently from the server", pos: pos}
	}
	cl := string(clean)
	out := segs[:0]
	for _, s := range segs {
		s.clean = cl[s.start:s.end]
		if strings.TrimFunc(s.clean, func(r rune) bool { return r < 0x80 && isMySpace(byte(r)) }) == "" {
			continue // empty, or only comments
		}
		out = append(out, s)
	}
	return out, cl, nil
}

// myLexSegments is myLex's scan: it splits sql at ';' into segments,
// blanking comments in clean. segStart follows the statement being read.
func myLexSegments(sql string, o myLexOpts, clean []byte, blank func(int, int), segStart *int) ([]mySegment, *myLexError) {
	var segs []mySegment
	setVar := false
	inExec := -1 // start of the executable comment being read as code
	n := len(sql)
	endSegment := func(end, semi int) {
		s, e := *segStart, end
		for s < e && isMySpace(sql[s]) {
			s++
		}
		for e > s && isMySpace(sql[e-1]) {
			e--
		}
		segs = append(segs, mySegment{start: s, end: e, semi: semi, setVarHint: setVar})
		setVar = false
	}
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == 0:
			// MySQL ends a # or -- comment at a NUL byte and takes one at
			// the end of the message for its end; only inside a string
			// literal is a NUL plain data.
			return nil, &myLexError{rule: "lexical", msg: "a NUL byte outside a string literal", pos: i}

		case c == '\'' || c == '"' || c == '`':
			end, err := myQuoted(sql, i, o)
			if err != nil {
				return nil, err
			}
			if inExec >= 0 && strings.Contains(sql[i:end], "*/") {
				return nil, &myLexError{rule: "lexical", msg: "a quoted string inside an executable comment contains */", pos: i}
			}
			if c == '"' && o.ansiQuotes && strings.IndexByte(sql[i:end], '\\') >= 0 {
				// The server reads "a\" as the identifier a\; the parser
				// takes the backslash for an escape.
				return nil, &myLexError{rule: "lexical", msg: "a backslash in a \"quoted\" identifier under ANSI_QUOTES", pos: i}
			}
			if k := strings.IndexByte(sql[i:end], 0); k >= 0 && (c == '`' || c == '"' && o.ansiQuotes) {
				// A NUL is data in a string literal, but no identifier
				// may hold one: the server stops reading there.
				return nil, &myLexError{rule: "unparseable", msg: "a NUL byte in a quoted identifier", pos: i}
			}
			i = end

		case c == '#' || c == '-' && i+1 < n && sql[i+1] == '-' && (i+2 == n || sql[i+2] <= ' ' || sql[i+2] == 0x7f):
			if inExec >= 0 {
				return nil, &myLexError{rule: "lexical", msg: "a line comment inside an executable comment", pos: i}
			}
			end := strings.IndexByte(sql[i:], '\n')
			if end < 0 {
				end = n
			} else {
				end += i
			}
			if k := strings.IndexByte(sql[i:end], 0); k >= 0 {
				return nil, &myLexError{rule: "lexical", msg: "a NUL byte outside a string literal", pos: i + k}
			}
			blank(i, end)
			i = end

		case c == '-' && i+2 < n && sql[i+1] == '-' && (sql[i+2] == 0x85 || sql[i+2] == 0xa0):
			// MySQL reads "--" then a character here; the TiDB parser
			// takes the byte for a space and the rest of the line for a
			// comment.
			return nil, &myLexError{rule: "lexical", msg: "-- followed by byte 0x" + strconv.FormatInt(int64(sql[i+2]), 16), pos: i}

		case c == '/' && i+1 < n && sql[i+1] == '*':
			if inExec >= 0 {
				return nil, &myLexError{rule: "lexical", msg: "a comment inside an executable comment", pos: i}
			}
			next, hint, err := myComment(sql, i, o, blank)
			if err != nil {
				return nil, err
			}
			setVar = setVar || hint
			if next < 0 { // an executable comment read as code
				inExec = i
				next = -next
			}
			i = next

		case c == '*' && inExec >= 0 && i+1 < n && sql[i+1] == '/':
			blank(i, i+2)
			inExec = -1
			i += 2

		case c == ';':
			if inExec >= 0 {
				return nil, &myLexError{rule: "lexical", msg: "a ';' inside an executable comment", pos: i}
			}
			endSegment(i, i)
			*segStart = i + 1
			i++

		case c >= 0x80:
			r, size := utf8.DecodeRuneInString(sql[i:])
			if r == utf8.RuneError && size <= 1 {
				return nil, &myLexError{rule: "unparseable", msg: "invalid UTF-8 outside a quoted string", pos: i}
			}
			i += size

		default:
			i++
		}
	}
	if inExec >= 0 {
		return nil, &myLexError{rule: "unparseable", msg: "an executable comment is not closed", pos: inExec}
	}
	endSegment(n, -1)
	return segs, nil
}

// commentIn returns where cleaned text holds something the parser would
// take for a comment, or -1. The parser also takes "--" before a 0x85 or
// 0xa0 byte for one.
func commentIn(clean []byte, o myLexOpts) int {
	s := string(clean)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'' || c == '"' || c == '`':
			end, err := myQuoted(s, i, o)
			if err != nil {
				return i
			}
			i = end - 1
		case c == '#', c == '/' && i+1 < len(s) && s[i+1] == '*':
			return i
		case c == '-' && i+1 < len(s) && s[i+1] == '-' && (i+2 == len(s) || s[i+2] <= ' ' || s[i+2] == 0x7f || s[i+2] == 0x85 || s[i+2] == 0xa0):
			return i
		}
	}
	return -1
}

// myQuoted returns the end of the string or quoted identifier starting at
// i.
func myQuoted(sql string, i int, o myLexOpts) (int, *myLexError) {
	q := sql[i]
	escapes := !o.noBackslashEscapes && q != '`' && !(q == '"' && o.ansiQuotes)
	for j := i + 1; j < len(sql); j++ {
		switch c := sql[j]; {
		case c == '\\' && escapes:
			j++
		case c == q:
			if j+1 < len(sql) && sql[j+1] == q {
				j++
				continue
			}
			return j + 1, nil
		}
	}
	what := "quoted string"
	if q == '`' || q == '"' && o.ansiQuotes {
		what = "quoted identifier"
	}
	return 0, &myLexError{rule: "unparseable", msg: "unterminated " + what, pos: i}
}

// myComment reads the comment starting at i (at "/*"). It blanks what the
// server skips and returns the offset after it; for an executable comment
// the server runs, it blanks only the opening marker and returns the
// negated offset of the content. hint reports an optimizer hint with
// SET_VAR.
func myComment(sql string, i int, o myLexOpts, blank func(int, int)) (next int, hint bool, err *myLexError) {
	n := len(sql)
	closeAt := strings.Index(sql[i+2:], "*/")
	if closeAt < 0 {
		if strings.HasPrefix(sql[i:], "/*!") {
			// The server reads on as code and runs out of text.
			return 0, false, &myLexError{rule: "unparseable", msg: "unterminated executable comment", pos: n}
		}
		return 0, false, &myLexError{rule: "unparseable", msg: "unterminated comment", pos: i}
	}
	end := i + 2 + closeAt + 2 // after "*/"
	if k := strings.IndexByte(sql[i:end], 0); k >= 0 {
		return 0, false, &myLexError{rule: "lexical", msg: "a NUL byte outside a string literal", pos: i + k}
	}
	skip := func() (int, bool, *myLexError) {
		blank(i, end)
		return end, false, nil
	}
	rest := sql[i+2:]
	var marker int // length of "/*!" or "/*M!"
	maria := false
	switch {
	case strings.HasPrefix(rest, "!"):
		marker = 3
	case strings.HasPrefix(rest, "M!"):
		marker, maria = 4, true
	case strings.HasPrefix(rest, "+"):
		body := strings.ToUpper(sql[i+3 : end-2])
		blank(i, end)
		return end, strings.Contains(body, "SET_VAR"), nil
	default:
		return skip()
	}
	// A version-skipped comment may hold one nested comment in both
	// servers, where a plain one may not; refuse the difference.
	if strings.Contains(sql[i+2:end-2], "/*") {
		return 0, false, &myLexError{rule: "lexical", msg: "a comment inside an executable comment", pos: i}
	}
	digits := 0
	for i+marker+digits < n && sql[i+marker+digits] >= '0' && sql[i+marker+digits] <= '9' {
		digits++
	}
	version := -1 // no version: the content is code wherever the marker counts
	switch {
	case digits >= 7 || digits == 6 && !maria && !(o.server.known && o.server.mariadb):
		// MySQL reads a version from every digit but skips five; MariaDB
		// reads five or six.
		return 0, false, &myLexError{rule: "lexical", msg: fmt.Sprintf("executable comment with a %d-digit version", digits), pos: i}
	case digits >= 5:
		version, _ = strconv.Atoi(sql[i+marker : i+marker+digits])
	default:
		digits = 0
	}
	run, decided := execCommentRuns(maria, version, o.server)
	if !decided {
		what := "/*!"
		if maria {
			what = "/*M!"
		}
		if version >= 0 {
			what += strconv.Itoa(version)
		}
		return 0, false, &myLexError{rule: "lexical", msg: "executable comment " + what + " runs on some MySQL and MariaDB versions and not others, and airlock does not know the server's", pos: i}
	}
	if !run {
		return skip()
	}
	blank(i, i+marker+digits)
	return -(i + marker + digits), false, nil
}

// execCommentRuns says whether the server runs an executable comment's
// content; decided is false when that depends on a server airlock does not
// know. version is -1 when the comment has none.
func execCommentRuns(maria bool, version int, s myServer) (run, decided bool) {
	if maria {
		// /*M! is MariaDB's; MySQL skips it as a plain comment.
		if !s.known {
			return false, false
		}
		if !s.mariadb {
			return false, true
		}
		return version < 0 || version <= s.version, true
	}
	if version < 0 {
		return true, true
	}
	if !s.known {
		// Every MySQL from 5.7 and every MariaDB runs versions below
		// 50700; above that they differ.
		return version < 50700, version < 50700
	}
	if s.mariadb {
		// MariaDB skips MySQL 5.7 and 8 versions, which it does not
		// implement.
		return version <= s.version && (version < 50700 || version > 99999), true
	}
	return version <= s.version, true
}
