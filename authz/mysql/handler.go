package mysql

import (
	"errors"
	"reflect"
	"strings"

	"github.com/pingcap/tidb/pkg/parser/ast"

	"github.com/airlockhq/airlock/authz"
)

// HANDLER is MySQL's and MariaDB's low-level table reader; the TiDB parser
// does not know it, so airlock reads it here:
//
//	HANDLER tbl OPEN [[AS] alias]
//	HANDLER name READ [index] {FIRST | NEXT | PREV | LAST} [WHERE cond] [LIMIT ...]
//	HANDLER name READ index {= | <= | >= | < | >} (value, ...) [WHERE cond] [LIMIT ...]
//	HANDLER name CLOSE
//
// It reads a table, so it is read access and held to the table scope. The
// values and the condition are expressions: they are parsed as the select
// list and WHERE clause of a SELECT, so their function calls and
// subqueries are classified like any other.

// myToken is one token of a HANDLER statement.
type myToken struct {
	text string
	// word is set for an unquoted word, ident for a word or a `quoted`
	// identifier.
	word, ident bool
	start, end  int
}

// isHandler reports whether a cleaned statement starts with HANDLER.
func isHandler(clean string) bool {
	s := strings.TrimLeft(clean, " \t\n\r\v\f")
	return len(s) >= 7 && strings.EqualFold(s[:7], "handler") && (len(s) == 7 || !isWordByte(s[7]))
}

func isWordByte(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// myTokens splits cleaned text (no comments) into words, quoted
// identifiers, strings and single punctuation characters; <=, >= and <>
// are one token.
func myTokens(s string, lex myLexOpts) ([]myToken, error) {
	var out []myToken
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isMySpace(c):
			i++
		case isWordByte(c):
			j := i
			for j < len(s) && isWordByte(s[j]) {
				j++
			}
			out = append(out, myToken{text: s[i:j], word: true, ident: true, start: i, end: j})
			i = j
		case c == '`' || c == '\'' || c == '"':
			end, err := myQuoted(s, i, lex)
			if err != nil {
				return nil, errors.New(err.msg)
			}
			ident := c == '`' || c == '"' && lex.ansiQuotes
			text := s[i:end]
			if ident {
				q := text[:1]
				text = strings.ReplaceAll(text[1:len(text)-1], q+q, q)
			}
			out = append(out, myToken{text: text, ident: ident, start: i, end: end})
			i = end
		case (c == '<' || c == '>') && i+1 < len(s) && (s[i+1] == '=' || c == '<' && s[i+1] == '>'):
			out = append(out, myToken{text: s[i : i+2], start: i, end: i + 2})
			i += 2
		default:
			out = append(out, myToken{text: s[i : i+1], start: i, end: i + 1})
			i++
		}
	}
	return out, nil
}

func (t myToken) is(kw string) bool { return t.word && strings.EqualFold(t.text, kw) }

// handler classifies a HANDLER statement.
func (a *myAnalysis) handler(clean string, set *mySettings) (string, error) {
	a.written = map[*ast.TableName]bool{}
	a.skip = map[*ast.TableName]bool{}
	a.f.Own = authz.AccessRead
	toks, err := myTokens(clean, set.lex)
	if err != nil {
		return "", err
	}
	bad := errors.New("HANDLER statement airlock cannot read")
	if len(toks) < 3 || !toks[0].is("handler") || !toks[1].ident {
		return "", bad
	}
	t := myTable{name: toks[1].text}
	i := 2
	if toks[i].text == "." {
		if i+1 >= len(toks) || !toks[i+1].ident {
			return "", bad
		}
		t.db, t.name = t.name, toks[i+1].text
		i += 2
	}
	if i >= len(toks) {
		return "", bad
	}
	verb := toks[i]
	rest := toks[i+1:]
	switch {
	case verb.is("open"):
		name := t.name
		if len(rest) > 0 && rest[0].is("as") {
			rest = rest[1:]
		}
		switch len(rest) {
		case 0:
		case 1:
			if !rest[0].ident {
				return "", bad
			}
			name = rest[0].text
		default:
			return "", bad
		}
		a.op, a.opName, a.handlerTable = myOpHandlerOpen, strings.ToLower(name), &t
		a.tables = append(a.tables, t)
		return "HANDLER OPEN", nil
	case verb.is("close"):
		if len(rest) != 0 || t.db != "" {
			return "", bad
		}
		a.op, a.opName = myOpHandlerClose, strings.ToLower(t.name)
		return "HANDLER CLOSE", nil
	case verb.is("read"):
		if t.db != "" {
			return "", bad
		}
		// The table is the handler's, which the session knows; without
		// one, the name is taken for a table's.
		a.op, a.opName, a.handlerTable = myOpHandlerRead, strings.ToLower(t.name), &t
		if err := a.handlerRead(clean, rest, set); err != nil {
			return "", err
		}
		return "HANDLER READ", nil
	}
	return "", bad
}

// handlerRead checks the part after READ and classifies its expressions.
func (a *myAnalysis) handlerRead(clean string, toks []myToken, set *mySettings) error {
	bad := errors.New("HANDLER READ airlock cannot read")
	// Find WHERE and LIMIT outside parentheses.
	where, limit, depth := -1, -1, 0
	for k, t := range toks {
		switch {
		case t.text == "(":
			depth++
		case t.text == ")":
			depth--
			if depth < 0 {
				return bad
			}
		case depth == 0 && t.is("where") && where < 0 && limit < 0:
			where = k
		case depth == 0 && t.is("limit") && limit < 0:
			limit = k
		}
	}
	if depth != 0 {
		return bad
	}
	headEnd := len(toks)
	if where >= 0 {
		headEnd = where
	} else if limit >= 0 {
		headEnd = limit
	}
	head := toks[:headEnd]
	values := ""
	position := func(t myToken) bool {
		return t.is("first") || t.is("next") || t.is("prev") || t.is("last")
	}
	switch {
	case len(head) == 1 && (head[0].is("first") || head[0].is("next")):
	case len(head) == 2 && head[0].ident && position(head[1]):
	case len(head) >= 4 && head[0].ident && isHandlerOp(head[1].text) &&
		head[2].text == "(" && head[len(head)-1].text == ")":
		values = clean[head[2].end:head[len(head)-1].start]
		if strings.TrimSpace(values) == "" {
			return bad
		}
	default:
		return bad
	}
	cond, lim := "", ""
	if where >= 0 {
		end := len(clean)
		if limit >= 0 {
			end = toks[limit].start
		}
		cond = clean[toks[where].end:end]
		if strings.TrimSpace(cond) == "" {
			return bad
		}
	}
	if limit >= 0 {
		lim = clean[toks[limit].end:]
		for _, t := range toks[limit+1:] {
			if !(t.word && t.text[0] >= '0' && t.text[0] <= '9' || t.text == "," || t.is("offset") || t.text == "?") {
				return bad
			}
		}
	}
	// The expressions, as a SELECT the parser can read.
	q := "SELECT "
	if values != "" {
		q += values
	} else {
		q += "1"
	}
	q += " FROM DUAL"
	if cond != "" {
		q += " WHERE " + cond
	}
	if lim != "" {
		q += " LIMIT " + lim
	}
	stmt, err := parseMySQL(q, set.parserMode)
	if err != nil {
		return errors.New("HANDLER READ: " + err.Error())
	}
	sel, ok := stmt.(*ast.SelectStmt)
	if !ok || sel.From != nil || sel.With != nil || sel.LockInfo != nil || sel.SelectIntoOpt != nil {
		return bad
	}
	a.walk(reflect.ValueOf(sel))
	return nil
}

func isHandlerOp(s string) bool {
	return s == "=" || s == "<=" || s == ">=" || s == "<" || s == ">"
}
