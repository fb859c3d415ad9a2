package postgres

import (
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
	"github.com/airlockhq/airlock/authz/internal/elide"
)

// pgLiteralCases are messages whose literals the elision scanner must
// delimit exactly as the Postgres scanner does.
var pgLiteralCases = []string{
	`SELECT 'a', 'it''s', E'x\'y\\', e'\n', $$dollar$$, $tag$with $$ inside$tag$`,
	`SELECT "quoted ""ident""", U&'d\0061t\+000061', B'0101', X'1F', N'nchar', 'after'`,
	`SELECT a$b, $1, $2::text, 'x' FROM t WHERE c = E'\\' AND d = $_$q$_$`,
	`SELECT tablE'x', 'y'`,
	`INSERT INTO t VALUES ('one'), ('two''s'), (E'three\'')`,
	`SELECT 'a'
'continued'`,
	`SELECT $a$ $b$ $a$, 'z'`,
	`SELECT 'é', 'ü''x', $é$ü$é$`,
	`SET application_name = 'x'; SELECT set_config('a.b', 'c', false)`,
	`COPY t FROM '/tmp/x'; DO $$ BEGIN END $$; COMMENT ON TABLE t IS 'c'`,
}

// TestElidePGTokens: every literal the scanner would replace is exactly a
// string constant token of pg_query's own scanner.
func TestElidePGTokens(t *testing.T) {
	for _, sql := range pgLiteralCases {
		checkPGSpans(t, sql)
	}
}

func FuzzElidePG(f *testing.F) {
	for _, sql := range pgLiteralCases {
		f.Add(sql)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if strings.IndexByte(sql, 0) >= 0 {
			return
		}
		checkPGSpans(t, sql)
	})
}

func checkPGSpans(t *testing.T, sql string) {
	t.Helper()
	e, ok := elidePGAt(sql, 0, 0)
	if !ok {
		return
	}
	scan, err := pg_query.Scan(sql)
	if err != nil {
		return // the parser refuses it too, and the message is parsed whole
	}
	tokens := map[[2]int]bool{}
	for _, tok := range scan.Tokens {
		if tok.Token == pg_query.Token_SCONST || tok.Token == pg_query.Token_USCONST {
			tokens[[2]int{int(tok.Start), int(tok.End)}] = true
		}
	}
	for _, s := range e.Spans {
		if !tokens[[2]int{s.Start, s.End}] {
			t.Fatalf("%.100q: elided %.100q at %d..%d (in %q), which is not one string token of pg_query's scanner", sql, sql[s.Start:s.End], s.Start, s.End, sql[max(0, s.Start-40):min(len(sql), s.End+40)])
		}
	}
}

// longLiteral is a literal body long enough to be elided.
var longLiteral = strings.Repeat("x", elide.Min+elideEscape)

// lengthenPG puts longLiteral into the n-th string constant of sql (by
// pg_query's scanner); false when there is none.
func lengthenPG(sql string, n int) (string, bool) {
	scan, err := pg_query.Scan(sql)
	if err != nil {
		return "", false
	}
	k := 0
	for _, tok := range scan.Tokens {
		if tok.Token != pg_query.Token_SCONST {
			continue
		}
		if k++; k-1 != n {
			continue
		}
		lit := sql[tok.Start:tok.End]
		var open int
		switch {
		case strings.HasPrefix(lit, "'"):
			open = 1
		case strings.HasPrefix(lit, "E'"), strings.HasPrefix(lit, "e'"):
			open = 2
		case strings.HasPrefix(lit, "$"):
			open = strings.IndexByte(lit[1:], '$') + 2
		default:
			return "", false
		}
		at := int(tok.Start) + open
		return sql[:at] + longLiteral + sql[at:], true
	}
	return "", false
}

// TestElisionKeepsDecisions: for every corpus case and every string
// literal in it, made long, the decision is the same with long literals
// elided before parsing and with the message parsed whole; and so for the
// case followed by a statement holding a long literal.
func TestElisionKeepsDecisions(t *testing.T) {
	elided := 0
	t.Run("postgres", func(t *testing.T) {
		for _, c := range authztest.ReadCorpus(t, "postgres.tsv") {
			g := authztest.CorpusGrant(t, c.Grant, nil)
			var variants []string
			for n := 0; ; n++ {
				v, ok := lengthenPG(c.SQL, n)
				if !ok {
					break
				}
				variants = append(variants, v)
			}
			variants = append(variants, c.SQL+";\nSELECT length('"+longLiteral+"')")
			for _, sql := range variants {
				if _, ok := classifyPGElided(sql); ok {
					elided++
				}
				whole := pgVerdict(g, sql, false)
				got := pgVerdict(g, sql, true)
				if !reflect.DeepEqual(got, whole) {
					t.Fatalf("%s: %.200q...\nelided: %.500v\n whole: %.500v", c, sql, got, whole)
				}
			}
		}
	})
	if elided < 250 {
		t.Fatalf("the elided path was taken only %d times", elided)
	}
	t.Logf("%d messages decided through the elided path, each the same as whole", elided)
}

func pgVerdict(g *authz.Grant, sql string, elide bool) authz.Verdict {
	defer func(old bool) { elideLiterals = old }(elideLiterals)
	elideLiterals = elide
	return NewSession(Options{}).Query(g, sql)
}

// TestElisionFallsBack: literals the authorizer reads, or that are not an
// expression's value, are parsed whole, and the decision is the same.
func TestElisionFallsBack(t *testing.T) {
	g := authztest.NewGrant(authz.AccessWrite)
	for _, sql := range []string{
		"COPY t FROM '" + longLiteral + "'",
		"COMMENT ON TABLE orders IS '" + longLiteral + "'",
		"SELECT '" + longLiteral + "'\n'joined'",
		"SELECT 1 -- '" + longLiteral + "'",
		"SELECT set_config('" + longLiteral + "', 'x', false)",
	} {
		_, ok := classifyPGElided(sql)
		whole, got := pgVerdict(g, sql, false), pgVerdict(g, sql, true)
		if !reflect.DeepEqual(got, whole) {
			t.Fatalf("%.60q (elided %v): elided %.500v, whole %.500v", sql, ok, got, whole)
		}
		if strings.Contains(sql, "set_config") {
			if got.Allow || got.Statements[0].Class.Required != authz.AccessAdmin {
				t.Fatalf("set_config of a long name: %.500v", got)
			}
			continue
		}
		if ok {
			t.Errorf("%.60q: elided, want parsed whole", sql)
		}
	}
}

// TestElisionMemory: deciding a message that is one long literal
// allocates a small fraction of it, and its statement's text is the
// message itself, not a copy.
func TestElisionMemory(t *testing.T) {
	g := authztest.NewGrant(authz.AccessRead)
	for _, tc := range []struct {
		name   string
		sql    string
		decide func(string) authz.Verdict
	}{
		{"postgres", "SELECT length('" + strings.Repeat("ab", 8<<20) + "')", func(sql string) authz.Verdict { return NewSession(Options{}).Query(g, sql) }},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		v := tc.decide(tc.sql)
		runtime.ReadMemStats(&after)
		if !v.Allow || len(v.Statements) != 1 {
			t.Fatalf("%s: %.500v", tc.name, v)
		}
		if a := after.TotalAlloc - before.TotalAlloc; a > uint64(len(tc.sql))/8 {
			t.Errorf("%s: deciding a %d-byte statement allocated %d bytes", tc.name, len(tc.sql), a)
		}
		if got := v.Statements[0].Text; len(got) != len(tc.sql) || &[]byte(got[:1])[0] == nil {
			t.Errorf("%s: statement text of %d bytes", tc.name, len(got))
		}
	}
}

// TestElideRandomPG: messages assembled from every kind of token, with
// long literals among them, are decided the same elided and whole.
func TestElideRandomPG(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	parts := []string{"SELECT ", "length(", "'" + longLiteral + "'", ")", ", ", "E'" + longLiteral + `\''`, "$q$" + longLiteral + "$q$",
		"'short'", `"col"`, "FROM orders", " WHERE ", "x = ", "1", "; ", "set_config('a', ", "'b', false)", "::text", "U&'x'", "$1"}
	g := authztest.NewGrant(authz.AccessWrite)
	for range 300 {
		var b strings.Builder
		for range 3 + r.IntN(10) {
			b.WriteString(parts[r.IntN(len(parts))])
		}
		sql := b.String()
		checkPGSpans(t, sql)
		if whole, got := pgVerdict(g, sql, false), pgVerdict(g, sql, true); !reflect.DeepEqual(got, whole) {
			t.Fatalf("%.300q:\nelided %.500v\n whole %.500v", sql, got, whole)
		}
	}
}
