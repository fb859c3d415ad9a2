package postgres

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// The pgbench-style point SELECT, the statement a busy agent sends most.
const pgPointSelect = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"

func BenchmarkPostgresPointSelect(b *testing.B) {
	g := authztest.NewGrant(authz.AccessRead)
	s := NewSession(Options{})
	b.ReportAllocs()
	for b.Loop() {
		if v := s.Query(g, pgPointSelect); !v.Allow {
			b.Fatal(v)
		}
	}
}

// Scoped: the same with a table scope and a limit on tables, the
// decision's slowest path.
func BenchmarkPostgresPointSelectScoped(b *testing.B) {
	g := authztest.NewGrant(authz.AccessRead)
	g.Scope.Tables = []string{"public.pgbench_branches", "public.pgbench_tellers", "public.pgbench_accounts"}
	g.Scope.MaxTables = 2
	s := NewSession(Options{})
	b.ReportAllocs()
	for b.Loop() {
		if v := s.Query(g, pgPointSelect); !v.Allow {
			b.Fatal(v)
		}
	}
}

func BenchmarkPostgresPointSelectCached(b *testing.B) {
	g := authztest.NewGrant(authz.AccessRead)
	g.Scope.Tables = []string{"public.pgbench_accounts"}
	s := NewSession(Options{Cache: authz.NewDecisionCache(4096)})
	b.ReportAllocs()
	for b.Loop() {
		if v := s.Query(g, pgPointSelect); !v.Allow {
			b.Fatal(v)
		}
	}
}

// Parallel: one cache shared by every session of a gateway.
func BenchmarkPostgresPointSelectCachedParallel(b *testing.B) {
	g := authztest.NewGrant(authz.AccessRead)
	c := authz.NewDecisionCache(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		s := NewSession(Options{Cache: c})
		for pb.Next() {
			if v := s.Query(g, pgPointSelect); !v.Allow {
				b.Fatal(v)
			}
		}
	})
}

// Masked: what pgbench -S sends, the point SELECT with a new random aid
// each time, through one cache shared by every session. The messages are
// generated beforehand and are 16 times as many as the cache holds, so
// that keyed by the exact text every one of them is a miss.
func BenchmarkPostgresPointSelectMasked(b *testing.B) {
	g := authztest.NewGrant(authz.AccessRead)
	c := authz.NewDecisionCache(4096)
	s := NewSession(Options{Cache: c})
	r := rand.New(rand.NewPCG(1, 2))
	msgs := make([]string, 16*4096)
	for i := range msgs {
		msgs[i] = "SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(1+r.IntN(10_000_000)) + ";"
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if v := s.Query(g, msgs[i%len(msgs)]); !v.Allow {
			b.Fatal(v)
		}
		i++
	}
}
