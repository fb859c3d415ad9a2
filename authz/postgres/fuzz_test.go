package postgres

import (
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// FuzzPostgres checks what must hold for any message: no panic, nothing
// the parser rejects is allowed, a verdict is all or nothing, nothing above
// the grant's level is allowed, and every statement's text is a piece of
// the message.
func FuzzPostgres(f *testing.F) {
	for _, tc := range authztest.ReadCorpus(f, "postgres.tsv") {
		f.Add(tc.SQL)
	}
	readGrant := authztest.NewGrant(authz.AccessRead)
	f.Fuzz(func(t *testing.T, s string) {
		v := Query(readGrant, s)
		if _, err := pg_query.Parse(s); err != nil && v.Allow {
			t.Fatalf("parser error %v, but allowed: %+v", err, v)
		}
		for i, d := range v.Statements {
			if d.Allow != v.Allow {
				t.Fatalf("statement %d allow=%v in a verdict of %v", i+1, d.Allow, v.Allow)
			}
			if d.Allow && d.Class.Required > authz.AccessRead {
				t.Fatalf("statement %d needs %v but was allowed under read", i+1, d.Class.Required)
			}
			if !d.Allow && d.Reason == "" {
				t.Fatalf("statement %d refused without a reason", i+1)
			}
			if !strings.Contains(s, d.Text) {
				t.Fatalf("statement %d text %q is not part of the message", i+1, d.Text)
			}
		}
		if !v.Allow && len(v.Statements) == 0 {
			t.Fatalf("refused with no decisions")
		}
	})
}
