package authz

import (
	"fmt"
	"sync"
	"testing"
)

func TestDecisionCache(t *testing.T) {
	c := NewDecisionCache(16)
	s := NewPGSession(PGOptions{Cache: c})
	rd := testGrant(AccessRead)
	const q = "select * from orders where id = 1"
	first := s.Postgres(rd, q)
	second := s.Postgres(rd, q)
	if hits, misses := c.Stats(); hits != 1 || misses != 1 {
		t.Fatalf("hits %d misses %d", hits, misses)
	}
	if !first.Allow || !second.Allow || second.Statements[0].Text != q {
		t.Fatalf("%+v %+v", first, second)
	}
	// A copy: changing it leaves the cache as it was.
	second.Statements[0].Allow = false
	if v := s.Postgres(rd, q); !v.Allow || !v.Statements[0].Allow {
		t.Fatalf("cached verdict changed: %+v", v)
	}

	// Literals matter: another text is another entry.
	if v := s.Postgres(rd, "select set_config('role', 'postgres', false)"); v.Allow {
		t.Fatalf("%+v", v)
	}
	if v := s.Postgres(rd, "select set_config('application_name', 'x', false)"); v.Allow {
		t.Fatalf("%+v", v)
	}

	// Every field of the grant a decision reads is part of the key.
	for name, change := range map[string]func(g *Grant){
		"access":    func(g *Grant) { g.Access = AccessNone },
		"state":     func(g *Grant) { g.State = StateRevoked },
		"tables":    func(g *Grant) { g.Scope.Tables = []string{"public.customers"} },
		"maxTables": func(g *Grant) { g.Scope.MaxTables = 0; g.Scope.Tables = []string{"x.y"} },
		"id":        func(g *Grant) { g.ID = "gr_other"; g.Access = AccessNone },
	} {
		g := testGrant(AccessRead)
		change(g)
		if v := s.Postgres(g, q); v.Allow {
			t.Errorf("%s: cached allow for a changed grant: %+v", name, v)
		}
	}
	g := testGrant(AccessRead)
	g.Scope.Tables = []string{"public.orders"}
	if v := s.Postgres(g, q); !v.Allow {
		t.Fatalf("%+v", v)
	}
	g.Scope.Tables[0] = "public.customers" // the same grant value, changed in place
	if v := s.Postgres(g, q); v.Allow {
		t.Fatalf("cached allow after the grant's scope changed in place: %+v", v)
	}
}

func TestDecisionCacheSkipsSessionState(t *testing.T) {
	c := NewDecisionCache(16)
	s := NewPGSession(PGOptions{Cache: c})
	rd := testGrant(AccessRead)
	s.Postgres(rd, "prepare p as select 1")
	s.Postgres(rd, "execute p")
	s.Postgres(rd, "deallocate p")
	if v := s.Postgres(rd, "execute p"); v.Allow {
		t.Fatalf("EXECUTE of a deallocated statement from the cache: %+v", v)
	}
	if c.Len() != 0 {
		t.Fatalf("stateful messages cached: %d", c.Len())
	}
	m := NewMySQLSession(MySQLOptions{Database: "app", Databases: []string{"app", "reporting"}, Cache: c})
	g := testGrant(AccessRead)
	g.Scope.Tables = []string{"app.orders"}
	if v := m.MySQL(g, "select * from orders"); !v.Allow {
		t.Fatalf("%+v", v)
	}
	m.MySQL(g, "use reporting")
	if v := m.MySQL(g, "select * from orders"); v.Allow {
		t.Fatalf("cached decision made for another current database: %+v", v)
	}
}

func TestDecisionCacheBound(t *testing.T) {
	c := NewDecisionCache(8)
	s := NewPGSession(PGOptions{Cache: c})
	rd := testGrant(AccessRead)
	for i := range 100 {
		s.Postgres(rd, fmt.Sprintf("select %d", i))
	}
	if c.Len() != 8 {
		t.Fatalf("len %d", c.Len())
	}
	// The most recent are kept.
	s.Postgres(rd, "select 99")
	if hits, _ := c.Stats(); hits != 1 {
		t.Fatalf("hits %d", hits)
	}
}

func TestDecisionCacheConcurrent(t *testing.T) {
	c := NewDecisionCache(64)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pg := NewPGSession(PGOptions{Cache: c})
			my := NewMySQLSession(MySQLOptions{Database: "app", Cache: c})
			rd, wr := testGrant(AccessRead), testGrant(AccessWrite)
			for i := range 300 {
				q := fmt.Sprintf("select %d from orders where id = %d", i%100, w)
				if v := pg.Postgres(rd, q); !v.Allow {
					t.Errorf("%+v", v)
					return
				}
				if v := my.MySQL(rd, q); !v.Allow {
					t.Errorf("%+v", v)
					return
				}
				if v := pg.Postgres(rd, "delete from orders where id = 1"); v.Allow {
					t.Errorf("%+v", v)
					return
				}
				if v := pg.Postgres(wr, "delete from orders where id = 1"); !v.Allow {
					t.Errorf("%+v", v)
					return
				}
			}
		}()
	}
	wg.Wait()
	if c.Len() > 64 {
		t.Fatalf("len %d", c.Len())
	}
}
