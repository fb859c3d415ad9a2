package postgres

import (
	"fmt"
	"sync"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

func TestDecisionCache(t *testing.T) {
	c := authz.NewDecisionCache(16)
	s := NewSession(Options{Cache: c})
	rd := authztest.NewGrant(authz.AccessRead)
	const q = "select * from orders where id = 1"
	first := s.Query(rd, q)
	second := s.Query(rd, q)
	if hits, misses := c.Stats(); hits != 1 || misses != 1 {
		t.Fatalf("hits %d misses %d", hits, misses)
	}
	if !first.Allow || !second.Allow || second.Statements[0].Text != q {
		t.Fatalf("%+v %+v", first, second)
	}
	// A copy: changing it leaves the cache as it was.
	second.Statements[0].Allow = false
	if v := s.Query(rd, q); !v.Allow || !v.Statements[0].Allow {
		t.Fatalf("cached verdict changed: %+v", v)
	}

	// Literals matter: another text is another entry.
	if v := s.Query(rd, "select set_config('role', 'postgres', false)"); v.Allow {
		t.Fatalf("%+v", v)
	}
	if v := s.Query(rd, "select set_config('application_name', 'x', false)"); v.Allow {
		t.Fatalf("%+v", v)
	}

	// Every field of the grant a decision reads is part of the key.
	for name, change := range map[string]func(g *authz.Grant){
		"access":    func(g *authz.Grant) { g.Access = authz.AccessNone },
		"state":     func(g *authz.Grant) { g.State = authz.StateRevoked },
		"tables":    func(g *authz.Grant) { g.Scope.Tables = []string{"public.customers"} },
		"maxTables": func(g *authz.Grant) { g.Scope.MaxTables = 0; g.Scope.Tables = []string{"x.y"} },
		"id":        func(g *authz.Grant) { g.ID = "gr_other"; g.Access = authz.AccessNone },
	} {
		g := authztest.NewGrant(authz.AccessRead)
		change(g)
		if v := s.Query(g, q); v.Allow {
			t.Errorf("%s: cached allow for a changed grant: %+v", name, v)
		}
	}
	g := authztest.NewGrant(authz.AccessRead)
	g.Scope.Tables = []string{"public.orders"}
	if v := s.Query(g, q); !v.Allow {
		t.Fatalf("%+v", v)
	}
	g.Scope.Tables[0] = "public.customers" // the same grant value, changed in place
	if v := s.Query(g, q); v.Allow {
		t.Fatalf("cached allow after the grant's scope changed in place: %+v", v)
	}
}

func TestDecisionCacheSkipsSessionState(t *testing.T) {
	c := authz.NewDecisionCache(16)
	s := NewSession(Options{Cache: c})
	rd := authztest.NewGrant(authz.AccessRead)
	s.Query(rd, "prepare p as select 1")
	s.Query(rd, "execute p")
	s.Query(rd, "deallocate p")
	if v := s.Query(rd, "execute p"); v.Allow {
		t.Fatalf("EXECUTE of a deallocated statement from the cache: %+v", v)
	}
	if c.Len() != 0 {
		t.Fatalf("stateful messages cached: %d", c.Len())
	}
}

func TestDecisionCacheBound(t *testing.T) {
	c := authz.NewDecisionCache(8)
	s := NewSession(Options{Cache: c})
	rd := authztest.NewGrant(authz.AccessRead)
	for i := range 100 {
		s.Query(rd, fmt.Sprintf("select %d", i))
	}
	if c.Len() != 8 {
		t.Fatalf("len %d", c.Len())
	}
	// The most recent are kept.
	s.Query(rd, "select 99")
	if hits, _ := c.Stats(); hits != 1 {
		t.Fatalf("hits %d", hits)
	}
}

func TestDecisionCacheConcurrent(t *testing.T) {
	c := authz.NewDecisionCache(64)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pg := NewSession(Options{Cache: c})
			rd, wr := authztest.NewGrant(authz.AccessRead), authztest.NewGrant(authz.AccessWrite)
			for i := range 300 {
				q := fmt.Sprintf("select %d from orders where id = %d", i%100, w)
				if v := pg.Query(rd, q); !v.Allow {
					t.Errorf("%+v", v)
					return
				}
				if v := pg.Query(rd, "delete from orders where id = 1"); v.Allow {
					t.Errorf("%+v", v)
					return
				}
				if v := pg.Query(wr, "delete from orders where id = 1"); !v.Allow {
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
