package mysql

import (
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
	"github.com/airlockhq/airlock/authz/internal/elide"
)

// longLiteral is a literal body long enough to be elided.
var longLiteral = strings.Repeat("x", elide.Min+10*elide.MaxReadLiteral+16)

// TestElisionKeepsDecisions: for every corpus case and every string
// literal in it, made long, the decision is the same with long literals
// elided before parsing and with the message parsed whole; and so for the
// case followed by a statement holding a long literal.
func TestElisionKeepsDecisions(t *testing.T) {
	elided := 0
	t.Run("mysql", func(t *testing.T) {
		for _, c := range authztest.ReadCorpus(t, "mysql.tsv") {
			g, o := corpusGrant(t, c.Grant)
			var variants []string
			set := NewSession(o).s
			if e, ok := elideMySQLAt(c.SQL, set.lex, 0); ok {
				for _, s := range e.Spans {
					at := s.Start + 1
					variants = append(variants, c.SQL[:at]+longLiteral+c.SQL[at:])
				}
			}
			variants = append(variants, c.SQL+";\nSELECT LENGTH('"+longLiteral+"')")
			for _, sql := range variants {
				s := NewSession(o).s
				if _, ok := classifyMySQLElided(sql, &s); ok {
					elided++
				}
				whole := myVerdict(g, o, sql, false)
				got := myVerdict(g, o, sql, true)
				if !reflect.DeepEqual(got, whole) {
					t.Fatalf("%s: %.200q...\nelided: %.500v\n whole: %.500v", c, sql, got, whole)
				}
			}
		}
	})
	if elided < 150 {
		t.Fatalf("the elided path was taken only %d times", elided)
	}
	t.Logf("%d messages decided through the elided path, each the same as whole", elided)
}

func myVerdict(g *authz.Grant, o Options, sql string, elide bool) authz.Verdict {
	defer func(old bool) { elideLiterals = old }(elideLiterals)
	elideLiterals = elide
	return NewSession(o).Query(g, sql)
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
		{"mysql", "SELECT LENGTH('" + strings.Repeat("ab", 8<<20) + "')", func(sql string) authz.Verdict { return NewSession(Options{Database: "app"}).Query(g, sql) }},
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
