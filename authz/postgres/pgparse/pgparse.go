// Package pgparse parses Postgres SQL with the Postgres parser
// (libpg_query, through pg_query_go) into pg_query_go's typed tree, by way
// of the library's JSON output.
//
// pg_query.Parse has the C library serialize its tree as protobuf, which
// costs about twice the parse itself (for a point SELECT: 15 µs against 5
// for the parse with JSON output on the development machine). Parse here
// takes the JSON and decodes it with generated code (decode_gen.go, one
// function per message of pg_query's schema) into the same Go types.
// The tests hold the two paths to identical trees; a member or enum value
// the generated code does not know is an error, so a library update that
// adds one fails closed until the code is generated again.
//
// Children (children_gen.go, from the same generator) lists the messages a
// tree node holds, which the authorizer's walk would otherwise find with
// protobuf reflection at several times the cost.
package pgparse

//go:generate go run ./gen

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Parse parses sql into the tree pg_query.Parse gives. Its errors are the
// parser's (a *parser.Error for SQL it cannot read), or say that the
// parser's output could not be read.
func Parse(sql string) (*pg_query.ParseResult, error) {
	js, err := pg_query.ParseToJSON(sql)
	if err != nil {
		return nil, err
	}
	return decode(js)
}

// ErrOutput wraps every failure to read the parser's output.
var ErrOutput = errors.New("pgparse: unreadable parser output")

func decode(js string) (*pg_query.ParseResult, error) {
	if !utf8.ValidString(js) {
		// Protobuf strings are UTF-8, and pg_query.Parse fails on such
		// a tree too.
		return nil, fmt.Errorf("%w: invalid UTF-8", ErrOutput)
	}
	d := decoder{s: js}
	var tree pg_query.ParseResult
	if err := decParseResult(&d, &tree); err != nil {
		return nil, err
	}
	if d.space(); d.i != len(d.s) {
		return nil, d.fail("data after the tree")
	}
	return &tree, nil
}

// decoder reads the JSON the parser writes: objects, arrays, strings,
// numbers and booleans, enums by value name.
type decoder struct {
	s     string
	i     int
	depth int
}

// maxDepth bounds the recursion; the parser's own limit on nesting is
// far lower.
const maxDepth = 10000

func (d *decoder) fail(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrOutput, d.i, fmt.Sprintf(format, args...))
}

func (d *decoder) space() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) expect(c byte) error {
	d.space()
	if d.i >= len(d.s) || d.s[d.i] != c {
		return d.fail("want %q", c)
	}
	d.i++
	return nil
}

// enter reads the '{' that opens an object.
func (d *decoder) enter() error {
	if d.depth++; d.depth > maxDepth {
		return d.fail("nested too deep")
	}
	return d.expect('{')
}

func (d *decoder) leave() { d.depth-- }

// key reads the next member's name and its ':'. At the object's '}' it
// reports false and consumes it. first is the caller's flag for the
// object's first member.
func (d *decoder) key(first *bool) (string, bool, error) {
	d.space()
	if d.i < len(d.s) && d.s[d.i] == '}' {
		d.i++
		return "", false, nil
	}
	if !*first {
		if err := d.expect(','); err != nil {
			return "", false, err
		}
		d.space()
	}
	*first = false
	k, err := d.str()
	if err != nil {
		return "", false, err
	}
	return k, true, d.expect(':')
}

func (d *decoder) unknown(msg, key string) error {
	return d.fail("%s has no member %q", msg, key)
}

// beginList reads the '[' of an array and reports whether an element
// follows.
func (d *decoder) beginList() (bool, error) {
	if err := d.expect('['); err != nil {
		return false, err
	}
	d.space()
	if d.i < len(d.s) && d.s[d.i] == ']' {
		d.i++
		return false, nil
	}
	return true, nil
}

// nextItem reads what follows an element: ',' (another follows) or ']'.
func (d *decoder) nextItem() (bool, error) {
	d.space()
	if d.i < len(d.s) {
		switch d.s[d.i] {
		case ',':
			d.i++
			return true, nil
		case ']':
			d.i++
			return false, nil
		}
	}
	return false, d.fail("want ',' or ']'")
}

func (d *decoder) boolean() (bool, error) {
	d.space()
	switch {
	case strings.HasPrefix(d.s[d.i:], "true"):
		d.i += 4
		return true, nil
	case strings.HasPrefix(d.s[d.i:], "false"):
		d.i += 5
		return false, nil
	}
	return false, d.fail("want a boolean")
}

// number reads a number, bare or quoted (protobuf's JSON quotes 64-bit
// integers).
func (d *decoder) number() (string, error) {
	d.space()
	quoted := d.i < len(d.s) && d.s[d.i] == '"'
	if quoted {
		d.i++
	}
	start := d.i
	for d.i < len(d.s) {
		c := d.s[d.i]
		if c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			d.i++
			continue
		}
		break
	}
	tok := d.s[start:d.i]
	if quoted {
		if d.i >= len(d.s) || d.s[d.i] != '"' {
			return "", d.fail("unterminated number")
		}
		d.i++
	}
	if tok == "" {
		return "", d.fail("want a number")
	}
	return tok, nil
}

func (d *decoder) signed(lo, hi int64) (int64, error) {
	tok, err := d.number()
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(tok, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, d.fail("%q is not an integer in range", tok)
	}
	return n, nil
}

func (d *decoder) unsigned(hi uint64) (uint64, error) {
	tok, err := d.number()
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(tok, 10, 64)
	if err != nil || n > hi {
		return 0, d.fail("%q is not an unsigned integer in range", tok)
	}
	return n, nil
}

func (d *decoder) int32() (int32, error) {
	n, err := d.signed(math.MinInt32, math.MaxInt32)
	return int32(n), err
}

func (d *decoder) int64() (int64, error) { return d.signed(math.MinInt64, math.MaxInt64) }

func (d *decoder) uint32() (uint32, error) {
	n, err := d.unsigned(math.MaxUint32)
	return uint32(n), err
}

func (d *decoder) uint64() (uint64, error) { return d.unsigned(math.MaxUint64) }

func (d *decoder) float64() (float64, error) {
	tok, err := d.number()
	if err != nil {
		return 0, err
	}
	f, err := strconv.ParseFloat(tok, 64)
	if err != nil {
		return 0, d.fail("%q is not a number", tok)
	}
	return f, nil
}

func (d *decoder) float32() (float32, error) {
	f, err := d.float64()
	return float32(f), err
}

// enum reads an enum value by name.
func enum[E ~int32](d *decoder, values map[string]int32) (E, error) {
	d.space()
	name, err := d.str()
	if err != nil {
		return 0, err
	}
	v, ok := values[name]
	if !ok {
		return 0, d.fail("unknown enum value %q", name)
	}
	return E(v), nil
}

// str reads a string.
func (d *decoder) str() (string, error) {
	d.space()
	if d.i >= len(d.s) || d.s[d.i] != '"' {
		return "", d.fail("want a string")
	}
	d.i++
	start := d.i
	for d.i < len(d.s) {
		c := d.s[d.i]
		if c == '"' {
			s := d.s[start:d.i]
			d.i++
			return s, nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		d.i++
	}
	var b strings.Builder
	b.WriteString(d.s[start:d.i])
	for d.i < len(d.s) {
		c := d.s[d.i]
		switch {
		case c == '"':
			d.i++
			return b.String(), nil
		case c < 0x20:
			return "", d.fail("control character in a string")
		case c != '\\':
			b.WriteByte(c)
			d.i++
			continue
		}
		if d.i+1 >= len(d.s) {
			break
		}
		e := d.s[d.i+1]
		d.i += 2
		switch e {
		case '"', '\\', '/':
			b.WriteByte(e)
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r, ok := d.hex4()
			if !ok {
				return "", d.fail("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if strings.HasPrefix(d.s[d.i:], `\u`) {
					d.i += 2
					if r2, ok = d.hex4(); !ok {
						return "", d.fail("bad \\u escape")
					}
				}
				r = utf16.DecodeRune(r, r2)
			}
			b.WriteRune(r)
		default:
			return "", d.fail("bad escape \\%c", e)
		}
	}
	return "", d.fail("unterminated string")
}

func (d *decoder) hex4() (rune, bool) {
	if d.i+4 > len(d.s) {
		return 0, false
	}
	n, err := strconv.ParseUint(d.s[d.i:d.i+4], 16, 16)
	if err != nil {
		return 0, false
	}
	d.i += 4
	return rune(n), true
}
