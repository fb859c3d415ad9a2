package postgres

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/airlockhq/airlock/authz/internal/authztest"
	"github.com/airlockhq/airlock/authz/postgres/pgparse"
)

// showKey spells a masked key with each placeholder as <kind>.
func showKey(key []byte) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		if key[i] == 0 && i+1 < len(key) {
			b.WriteString("<" + string(key[i+1]) + ">")
			i++
			continue
		}
		b.WriteByte(key[i])
	}
	return b.String()
}

func TestMaskPG(t *testing.T) {
	for _, tc := range []struct {
		sql, key string // key "" for none
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;", "SELECT abalance FROM pgbench_accounts WHERE aid = <i>;"},
		{"select 'a', 'it''s', E'x\\ny', e'\\\\', $$d$$, $t$x$$y$t$, B'01', x'1F', N'n'", "select <s>, <s>, <e>, <e>, <d>, <d>, <b>, <x>, N<s>"},
		{"select 2147483647, 2147483648, 007, 1.5, .5, 3., 1e10, 1.5E-3, 2e+2", "select <i>, <f>, <i>, <f>, <f>, <f>, <f>, <f>, <f>"},
		{"select -1, +2, 1-2, a.b, t.5, $1, $12::int, '{1,2}'::int[], x[1:2]", "select -<i>, +<i>, <i>-<i>, a.b, t<f>, $1, $12::int, <s>::int[], x[<i>:<i>]"},
		{"select date'2020-01-01', interval '1 day', 'x'::regclass, tablE'x'", "select date<s>, interval <s>, <s>::regclass, tablE<s>"},
		{"select 1; select 'a' ;", "select <i>; select <s> ;"},
		{`select "a""b", "x'y", a$b, _x1 from t where c := 1`, `select "a""b", "x'y", a$b, _x1 from t where c := <i>`},
		{"select 'é', $$ü$$", "select <s>, <d>"},
		{"select 'a'\n, 'b'", "select <s>\n, <s>"},
		{"select 'a' 'b'", "select <s> <s>"},
		{"alter table t alter c set statistics 100", "alter table t alter c set statistics <i>"},

		// Nothing to mask: the exact text does.
		{"select a from t", ""},
		{"", ""},
		// Comments, and what the lexer or psql would read otherwise.
		{"select 1 -- c", ""},
		{"select 1 /* c */", ""},
		{"select 1 +-- c\n", ""},
		{"select 'a'\n'b'", ""},
		{"select 'a' \r\n\t 'b'", ""},
		{"select 'abc", ""},
		{`select "abc`, ""},
		{`select ""`, ""},
		{"select $a$ x", ""},
		{"select $ 1", ""},
		{"select $a", ""},
		{"select $1a", ""},
		{"select $1$", ""},
		{"select U&'x'", ""},
		{`select U&"x"`, ""},
		{"select u&'x' uescape '!'", ""},
		{"select 'x' uescape '!'", ""},
		{"select 1e", ""},
		{"select 1e+", ""},
		{"select 1.5x", ""},
		{"select .5e-3x", ""},
		{"select 0x1F", ""},
		{"select 0o17", ""},
		{"select 0b101", ""},
		{"select 1_000", ""},
		{"select 1..2", ""},
		{"select 1.5.1", ""},
		{"select 1$", ""},
		{"select a..b, 1", ""},
		{"select :var, 1", ""},
		{"select :'var', 1", ""},
		{`select :"var", 1`, ""},
		{"select :{?var}, 1", ""},
		{"select 1 \\g", ""},
		{"select E'\\x41'", ""},
		{"select E'\\101'", ""},
		{"select E'\\u0041'", ""},
		{"select E'\\U00000041'", ""},
		{"select E'\\''", ""},
		{"select E'\\\x01'", ""},
		{"select B'012'", ""},
		{"select B'0''1'", ""},
		{"select X'1G'", ""},
		{"select 'a\xff'", ""},
		{"select $$\xff$$", ""},
		{"select é, 1", ""},
		{`select "é", 1`, ""},
		{"select 1\x00", ""},
		{"select '\x00'", ""},
		{"select 1\x7f", ""},
		{"select $é$x$é$", ""},
		// The grammar checks these constants itself.
		{"select 1::float(10)", ""},
		{"create table t (a FLOAT (53), b int default 1)", ""},
		{"alter index i alter column 1 set statistics 100", ""},
		{"alter index i ALTER 1 set statistics 100", ""},
	} {
		key, consts, ok := maskPG(tc.sql, nil, nil)
		got := ""
		if ok {
			got = showKey(key)
			if len(consts) == 0 {
				t.Errorf("%q: a key without constants", tc.sql)
			}
		}
		if got != tc.key {
			t.Errorf("%q:\n got %q\nwant %q", tc.sql, got, tc.key)
		}
	}
}

// TestMaskPGAllocs: with buffers from an earlier message, masking
// allocates nothing.
func TestMaskPGAllocs(t *testing.T) {
	key, consts, _ := maskPG(pgPointSelect, nil, nil)
	if n := testing.AllocsPerRun(100, func() {
		key, consts, _ = maskPG(pgPointSelect, key[:0], consts[:0])
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
}

// TestMaskOffsets: offsets outside constants map to the key and back to
// another message of the same key.
func TestMaskOffsets(t *testing.T) {
	a := "select 'a', 1; select $$bb$$, 'ccc' "
	b := "select 'xxxx', 12345; select $t$$t$, '' "
	ka, ca, _ := maskPG(a, nil, nil)
	kb, cb, _ := maskPG(b, nil, nil)
	if string(ka) != string(kb) {
		t.Fatalf("%q != %q", showKey(ka), showKey(kb))
	}
	for _, tc := range []struct{ in, out string }{
		{"select", "select"}, {"select 'a', 1", "select 'xxxx', 12345"},
		{"select $$bb$$, 'ccc'", "select $t$$t$, ''"},
	} {
		start := strings.Index(a, tc.in)
		if start < 0 {
			t.Fatal(tc.in)
		}
		if start > 0 {
			start = strings.LastIndex(a, tc.in)
		}
		ks, ok1 := maskToKey(ca, start)
		ke, ok2 := maskToKey(ca, start+len(tc.in))
		if !ok1 || !ok2 {
			t.Fatalf("%q: inside a constant", tc.in)
		}
		if got := b[maskFromKey(cb, ks):maskFromKey(cb, ke)]; got != tc.out {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.out)
		}
	}
	if _, ok := maskToKey(ca, strings.Index(a, "'a'")+1); ok {
		t.Errorf("an offset inside a constant mapped")
	}
}

// maskSamples are messages to check the scanner on: the corpus, psql's
// catalog queries, the literal cases of the elision scanner, and the
// cases of TestMaskPG.
func maskSamples(t testing.TB) []string {
	var out []string
	for _, c := range authztest.ReadCorpus(t, "postgres.tsv") {
		out = append(out, c.SQL)
	}
	files, err := filepath.Glob("testdata/psql15/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	out = append(out, pgLiteralCases...)
	out = append(out, maskOracleExtra...)
	return out
}

// TestMaskedKeyTokens runs FuzzMaskedKey's check on the samples.
func TestMaskedKeyTokens(t *testing.T) {
	keyed := 0
	for _, sql := range maskSamples(t) {
		if checkMaskedKey(t, sql) {
			keyed++
		}
	}
	t.Logf("%d samples have a masked key", keyed)
	if keyed < 200 {
		t.Fatalf("only %d samples have a masked key", keyed)
	}
}

// FuzzMaskedKey: wherever the scanner gives a key, pg_query's own
// scanner finds the same constants (kind and bounds) and no other;
// replacing every constant with another of its kind (an extreme of it:
// empty or long, 0 or the largest) gives the same key, the same tokens
// from pg_query's scanner but for the constants' values, and a message
// that the parser refuses exactly when it refuses the original.
func FuzzMaskedKey(f *testing.F) {
	for _, sql := range maskSamples(f) {
		f.Add(sql)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		checkMaskedKey(t, sql)
	})
}

// maskExtremes are replacements of each kind of constant, smallest and
// largest. maskFloat+1 is for a number right after a word (t.5), which
// must start with its point.
var maskExtremes = [2]map[byte]string{
	{maskString: "''", maskEscape: "E''", maskDollar: "$$$$", maskBits: "B''", maskHex: "X''", maskInteger: "0", maskFloat: "2147483648", maskFloat + 1: ".0"},
	{maskString: "'it''s \\ é " + strings.Repeat("x", 5000) + "'", maskEscape: `e'\\ \n\t\b\f\r\a''"é'`, maskDollar: "$Q_1$'$q$$Q_1$",
		maskBits: "b'0101'", maskHex: "x'09afAF'", maskInteger: "2147483647", maskFloat: "99999999999999999999.5e-300", maskFloat + 1: ".5E+300"},
}

// substituteConsts replaces the constants of sql with what pick gives for
// their kind; for a number right after a word, with kind maskFloat+1.
func substituteConsts(sql string, consts []maskConst, pick func(kind byte) string) string {
	var b strings.Builder
	last := 0
	for _, c := range consts {
		b.WriteString(sql[last:c.start])
		k := c.kind
		if k == maskFloat && c.start > 0 && isWordByte(sql[c.start-1]) {
			k++
		}
		b.WriteString(pick(k))
		last = c.end
	}
	b.WriteString(sql[last:])
	return b.String()
}

var maskTokenKinds = map[pg_query.Token]byte{
	pg_query.Token_SCONST: 's', pg_query.Token_BCONST: maskBits, pg_query.Token_XCONST: maskHex,
	pg_query.Token_ICONST: maskInteger, pg_query.Token_FCONST: maskFloat, pg_query.Token_USCONST: 'u',
}

// tokenKind is the kind of constant of a token, 0 for other tokens;
// plain, escape and dollar-quoted strings are all SCONST.
func tokenKind(tok pg_query.Token) byte { return maskTokenKinds[tok] }

func constKind(kind byte) byte {
	if kind == maskEscape || kind == maskDollar {
		return maskString
	}
	return kind
}

// checkMaskedKey checks what FuzzMaskedKey says; false when sql has no
// key.
func checkMaskedKey(t *testing.T, sql string) bool {
	t.Helper()
	key, consts, ok := maskPG(sql, nil, nil)
	if !ok {
		return false
	}
	scan, err := pg_query.Scan(sql)
	if err == nil {
		var got []maskConst
		for _, tok := range scan.Tokens {
			if k := tokenKind(tok.Token); k != 0 {
				got = append(got, maskConst{int(tok.Start), int(tok.End), k})
			}
		}
		want := make([]maskConst, len(consts))
		for i, c := range consts {
			want[i] = maskConst{c.start, c.end, constKind(c.kind)}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%q: constants %v, pg_query's scanner found %v", sql, want, got)
		}
	}
	_, perr := pgparse.Parse(sql)
	for _, ext := range maskExtremes {
		v := substituteConsts(sql, consts, func(k byte) string { return ext[k] })
		vkey, _, ok := maskPG(v, nil, nil)
		if !ok || string(vkey) != string(key) {
			t.Fatalf("%q: its variant %q has key %q (%v), want %q", sql, v, showKey(vkey), ok, showKey(key))
		}
		vscan, verr := pg_query.Scan(v)
		if (err == nil) != (verr == nil) {
			t.Fatalf("%q: pg_query's scanner said %v, and %v of its variant %q", sql, err, verr, v)
		}
		if err == nil {
			if len(vscan.Tokens) != len(scan.Tokens) {
				t.Fatalf("%q: %d tokens, its variant %q %d", sql, len(scan.Tokens), v, len(vscan.Tokens))
			}
			for i, tok := range scan.Tokens {
				if vscan.Tokens[i].Token != tok.Token {
					t.Fatalf("%q: token %d is %v, of its variant %q %v", sql, i, tok.Token, v, vscan.Tokens[i].Token)
				}
			}
		}
		if _, vperr := pgparse.Parse(v); (perr == nil) != (vperr == nil) {
			t.Fatalf("%q: the parser said %v, and %v of its variant %q", sql, perr, vperr, v)
		}
	}
	return true
}

// maskOracleExtra are messages beyond the corpora for the masked cache's
// oracle and the scanner's checks: decisions that read a constant (a
// setting's name or value, an option's argument, a file name), constants
// of every kind, and constants the grammar checks itself.
var maskOracleExtra = []string{
	"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
	"select set_config('application_name', 'x', false)",
	"select set_config('role', 'x', false)",
	"select set_config('search_path', 'public', false)",
	"select set_config($$statement_timeout$$, '1s', true)",
	"select set_config(E'application_name', 'x', false)",
	"select set_config('application_name'::text, 'x', false) from orders where id = 1",
	"select set_config(setting_name => 'statement_timeout', new_value => '5s', is_local => true)",
	"select set_config(status, 'x', false) from orders where id = 1",
	"set client_encoding = 'UTF8'",
	"set client_encoding to 'SJIS'",
	"set names 'latin1'",
	"set application_name = 'report'",
	"set statement_timeout = 5000",
	"set search_path = 'public'",
	"set role 'postgres'",
	"set session authorization 'postgres'",
	"explain (analyze 'off') delete from orders where id = 1",
	"explain (analyze 'on') select * from orders where id = 1",
	"explain (analyze 0) delete from orders where id = 1",
	"explain (analyze 1, format 'json') update orders set status = 'x' where id = 2",
	"explain (format 'json') delete from orders where id = 3",
	"explain analyze select * from orders where id = 4",
	"copy orders to '/tmp/orders.csv'",
	"copy orders from '/etc/passwd'",
	"copy orders to program 'cat > /tmp/x'",
	"copy orders from stdin with (format 'csv', delimiter ',')",
	"copy (select * from orders where id = 1) to stdout with (format 'csv')",
	"select pg_read_file('/etc/passwd')",
	"select pg_sleep(1)",
	"select * from orders where status = 'x' and id > 5 limit 10 offset 2",
	"select * from orders where id = 1 for update",
	"update orders set status = 'shipped' where id = 42",
	"delete from orders where 1 = 1",
	"delete from orders where 'a' = 'a'",
	"update orders set total = 1.5 where id = 7 returning id",
	"insert into orders (id, status) values (1, 'new'), (2, E'it''s')",
	"select nextval('orders_id_seq')",
	"select 'orders'::regclass, 'pg_authid'::regclass::oid",
	"select interval '1 day', date '2020-01-01', B'101', X'1F', 1e3, .5",
	"select 1::float(10)",
	"alter index i alter column 1 set statistics 100",
	"select $$a$$, $t$b$t$, 'c'",
	"select 1; select 2",
	"select 1; delete from orders where id = 2",
	"select set_config('application_name', 'x', false); select 1",
	"prepare p as select * from orders where id = 1",
	"execute p(1)",
	"select current_setting('role')",
	"select lo_import('/etc/passwd')",
	"select * from orders where id = 1 -- comment",
	"select dblink('host=x', 'select 1')",
	"select query_to_xml('select * from secrets', true, false, '')",
	"comment on table orders is 'x'",
	"notify ch, 'payload'",
	"prepare transaction 'gid'",
	"commit prepared 'gid'",
	"do 'begin perform 1; end'",
	"create function f() returns int language 'sql' as 'select 1'",
	"select 2147483648, 2147483647",
	"fetch 5 from c",
	"select * from orders tablesample system (10)",
	"create table t (a varchar(20) default 'x', b numeric(10, 2))",
	"vacuum (parallel 2) orders",
	"select 'a' || 'b', E'\\n', n'x'",
	"select * from orders where id = $1 and status = 'x'",
}
