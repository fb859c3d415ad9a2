package mysql

import (
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// The pgbench-style point SELECT, the statement a busy agent sends most.
const myPointSelect = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213"

func BenchmarkMySQLPointSelect(b *testing.B) {
	g := authztest.NewGrant(authz.AccessRead)
	s := NewSession(Options{Database: "app"})
	b.ReportAllocs()
	for b.Loop() {
		if v := s.Query(g, myPointSelect); !v.Allow {
			b.Fatal(v)
		}
	}
}

func BenchmarkMySQLPointSelectCached(b *testing.B) {
	g := authztest.NewGrant(authz.AccessRead)
	g.Scope.Tables = []string{"app.pgbench_accounts"}
	s := NewSession(Options{Database: "app", Cache: authz.NewDecisionCache(4096)})
	b.ReportAllocs()
	for b.Loop() {
		if v := s.Query(g, myPointSelect); !v.Allow {
			b.Fatal(v)
		}
	}
}
