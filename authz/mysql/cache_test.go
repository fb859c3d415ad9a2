package mysql

import (
	"fmt"
	"sync"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

func TestDecisionCacheSkipsSessionState(t *testing.T) {
	c := authz.NewDecisionCache(16)
	m := NewSession(Options{Database: "app", Databases: []string{"app", "reporting"}, Cache: c})
	g := authztest.NewGrant(authz.AccessRead)
	g.Scope.Tables = []string{"app.orders"}
	if v := m.Query(g, "select * from orders"); !v.Allow {
		t.Fatalf("%+v", v)
	}
	m.Query(g, "use reporting")
	if v := m.Query(g, "select * from orders"); v.Allow {
		t.Fatalf("cached decision made for another current database: %+v", v)
	}
}

func TestDecisionCacheConcurrent(t *testing.T) {
	c := authz.NewDecisionCache(64)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			my := NewSession(Options{Database: "app", Cache: c})
			rd := authztest.NewGrant(authz.AccessRead)
			for i := range 300 {
				q := fmt.Sprintf("select %d from orders where id = %d", i%100, w)
				if v := my.Query(rd, q); !v.Allow {
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
