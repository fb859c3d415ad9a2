package mysql

import (
	"strings"

	"github.com/pingcap/tidb/pkg/parser/ast"
	"github.com/pingcap/tidb/pkg/parser/test_driver"

	"github.com/airlockhq/airlock/authz/internal/elide"
)

// Long literals, elided before parsing: see package authz/internal/elide
// for why that cannot change a decision. This is the MySQL scanner that
// finds them and the check that they came back from the parser.

// elideMySQL replaces the long string literals ('...', and "..." unless
// ANSI_QUOTES) of a MySQL message. It reports false when there is nothing
// to replace or the message holds what the scanner leaves to myLex and the
// parser (a comment, a NUL byte, an unterminated quote).
func elideMySQL(sql string, o myLexOpts) (*elide.Elision, bool) {
	return elideMySQLAt(sql, o, elide.Plain)
}

// elideMySQLAt is elideMySQL replacing literals longer than plain bytes.
func elideMySQLAt(sql string, o myLexOpts, plain int) (*elide.Elision, bool) {
	if strings.IndexByte(sql, 0) >= 0 {
		return nil, false
	}
	x := elide.Elider{Src: sql}
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
			if literal && !(i > 0 && elide.IsIdentByte(sql[i-1])) && end-i > plain {
				x.Replace(i, end)
			}
			i = end
		default:
			i++
		}
	}
	return x.Done()
}

// foundMySQL reports how many placeholders of the segment [from, to) of
// the reduced text came back from the parser as a ValueExpr holding them
// at their offsets (stmt was parsed from that segment); false when one did
// not, or a placeholder stands anywhere else.
func foundMySQL(e *elide.Elision, stmt ast.Node, from, to int) (int, bool) {
	want := map[int]string{}
	for _, s := range e.Spans {
		if s.At >= from && s.AtEnd <= to {
			want[s.At-from] = s.Value
		} else if s.At < to && s.AtEnd > from {
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
		if s, isString := x.GetValue().(string); isString && strings.HasPrefix(s, elide.PlaceholderPrefix) {
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
