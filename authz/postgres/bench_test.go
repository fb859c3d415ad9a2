package authz

import "testing"

// The pgbench-style point SELECT, the statement a busy agent sends most.
const (
	pgPointSelect = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"
	myPointSelect = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213"
)

func BenchmarkPostgresPointSelect(b *testing.B) {
	g := testGrant(AccessRead)
	s := NewPGSession(PGOptions{})
	b.ReportAllocs()
	for b.Loop() {
		if v := s.Postgres(g, pgPointSelect); !v.Allow {
			b.Fatal(v)
		}
	}
}

// Scoped: the same with a table scope and a limit on tables, the
// decision's slowest path.
func BenchmarkPostgresPointSelectScoped(b *testing.B) {
	g := testGrant(AccessRead)
	g.Scope.Tables = []string{"public.pgbench_branches", "public.pgbench_tellers", "public.pgbench_accounts"}
	g.Scope.MaxTables = 2
	s := NewPGSession(PGOptions{})
	b.ReportAllocs()
	for b.Loop() {
		if v := s.Postgres(g, pgPointSelect); !v.Allow {
			b.Fatal(v)
		}
	}
}

func BenchmarkPostgresPointSelectCached(b *testing.B) {
	g := testGrant(AccessRead)
	g.Scope.Tables = []string{"public.pgbench_accounts"}
	s := NewPGSession(PGOptions{Cache: NewDecisionCache(4096)})
	b.ReportAllocs()
	for b.Loop() {
		if v := s.Postgres(g, pgPointSelect); !v.Allow {
			b.Fatal(v)
		}
	}
}

// Parallel: one cache shared by every session of a gateway.
func BenchmarkPostgresPointSelectCachedParallel(b *testing.B) {
	g := testGrant(AccessRead)
	c := NewDecisionCache(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		s := NewPGSession(PGOptions{Cache: c})
		for pb.Next() {
			if v := s.Postgres(g, pgPointSelect); !v.Allow {
				b.Fatal(v)
			}
		}
	})
}

func BenchmarkMySQLPointSelect(b *testing.B) {
	g := testGrant(AccessRead)
	s := NewMySQLSession(MySQLOptions{Database: "app"})
	b.ReportAllocs()
	for b.Loop() {
		if v := s.MySQL(g, myPointSelect); !v.Allow {
			b.Fatal(v)
		}
	}
}

func BenchmarkMySQLPointSelectCached(b *testing.B) {
	g := testGrant(AccessRead)
	g.Scope.Tables = []string{"app.pgbench_accounts"}
	s := NewMySQLSession(MySQLOptions{Database: "app", Cache: NewDecisionCache(4096)})
	b.ReportAllocs()
	for b.Loop() {
		if v := s.MySQL(g, myPointSelect); !v.Allow {
			b.Fatal(v)
		}
	}
}
