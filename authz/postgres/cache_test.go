package postgres

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unsafe"

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

	// Literals the decision reads matter: another text is another entry.
	wr := authztest.NewGrant(authz.AccessWrite)
	if v := s.Query(wr, "select set_config('role', 'postgres', false)"); v.Allow {
		t.Fatalf("%+v", v)
	}
	if v := s.Query(wr, "select set_config('application_name', 'x', false)"); !v.Allow {
		t.Fatalf("%+v", v)
	}
	if v := s.Query(wr, "select set_config('role', 'postgres', false)"); v.Allow {
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
		s.Query(rd, fmt.Sprintf("select c%d from t", i))
	}
	if c.Len() != 8 {
		t.Fatalf("len %d", c.Len())
	}
	// The most recent are kept.
	s.Query(rd, "select c99 from t")
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

// TestDecisionCacheMasked: the point SELECT with another aid is a hit
// that parses nothing, with the message's own text; a decision that read
// a constant is kept under the exact text only.
func TestDecisionCacheMasked(t *testing.T) {
	c := authz.NewDecisionCache(16)
	s := NewSession(Options{Cache: c})
	rd := authztest.NewGrant(authz.AccessRead)
	first := s.Query(rd, "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;")
	if !first.Allow || s.parsed != 1 {
		t.Fatalf("%+v, parsed %d", first, s.parsed)
	}
	for _, q := range []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
		"SELECT abalance FROM pgbench_accounts WHERE aid = 2147483647;",
		"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
	} {
		got := s.Query(rd, q)
		if s.parsed != 1 {
			t.Fatalf("%q parsed", q)
		}
		if want := NewSession(Options{}).Query(rd, q); !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %+v\nwant %+v", q, got, want)
		}
		if got.Statements[0].Text != strings.TrimSuffix(q, ";") {
			t.Fatalf("%q: text %q", q, got.Statements[0].Text)
		}
	}
	if hits, misses := c.Stats(); hits != 3 || misses != 1 {
		t.Fatalf("hits %d misses %d", hits, misses)
	}
	// Another kind of constant is another key.
	s.Query(rd, "SELECT abalance FROM pgbench_accounts WHERE aid = 4821300000;")
	if s.parsed != 2 {
		t.Fatalf("an FCONST shared the key of an ICONST")
	}

	// Several statements, each with its own text.
	s.Query(rd, "select 1 ;  select 'a', b from t where c = $1")
	v := s.Query(rd, "select 22 ;  select 'bcd', b from t where c = $1")
	if s.parsed != 3 || len(v.Statements) != 2 || v.Statements[0].Text != "select 22" || v.Statements[1].Text != "select 'bcd', b from t where c = $1" {
		t.Fatalf("parsed %d: %+v", s.parsed, v)
	}

	// set_config reads its setting's name: each text is decided.
	wr := authztest.NewGrant(authz.AccessWrite)
	parsed := s.parsed
	for range 2 {
		if v := s.Query(wr, "select set_config('application_name', 'x', false)"); !v.Allow {
			t.Fatalf("%+v", v)
		}
		if v := s.Query(wr, "select set_config('role', 'x', false)"); v.Allow {
			t.Fatalf("%+v", v)
		}
	}
	if s.parsed != parsed+2 {
		t.Fatalf("parsed %d messages, want 2 (each once, then from the exact text)", s.parsed-parsed)
	}
	// A NUL byte in a constant: the parser would read only up to it.
	s.Query(rd, "select 'a' from t")
	if v := s.Query(rd, "select '\x00' from t"); v.Allow || v.Statements[0].Rule != "unparseable" {
		t.Fatalf("%+v", v)
	}
	parsed = s.parsed
	// Unparseable messages are not cached at all.
	s.Query(rd, "select E'\\q' frm t")
	s.Query(rd, "select E'\\q' frm t")
	if s.parsed != parsed+2 {
		t.Fatalf("an unparseable message was cached")
	}
}

// TestDecisionCacheMaskedAllocs: a masked hit allocates the key and the
// verdict's copy, nothing else.
func TestDecisionCacheMaskedAllocs(t *testing.T) {
	s := NewSession(Options{Cache: authz.NewDecisionCache(16)})
	rd := authztest.NewGrant(authz.AccessRead)
	s.Query(rd, pgPointSelect)
	q := "SELECT abalance FROM pgbench_accounts WHERE aid = 1;"
	if n := testing.AllocsPerRun(100, func() { s.Query(rd, q) }); n > 2 {
		t.Fatalf("%v allocations", n)
	}
	if s.parsed != 1 {
		t.Fatalf("parsed %d", s.parsed)
	}
}

// TestQueryOfABorrowedText: the gateway hands Query a view of its read
// buffer, which its next message overwrites (see Session.Query). What the
// session and the cache keep of it are copies: once the buffer is
// overwritten, the same texts are decided from the cache, and an EXECUTE
// from the prepared statement, as a session without a cache decides them.
func TestQueryOfABorrowedText(t *testing.T) {
	c := authz.NewDecisionCache(64)
	s := NewSession(Options{Cache: c})
	rd := authztest.NewGrant(authz.AccessRead)
	buf := make([]byte, 0, 256)
	view := func(q string) string {
		buf = append(buf[:0], q...)
		return unsafe.String(unsafe.SliceData(buf), len(buf))
	}
	scribble := func() {
		all := buf[:cap(buf)]
		for i := range all {
			all[i] = 'x'
		}
	}
	texts := []string{
		"select * from orders where id = 1",                    // kept under its masked key
		"select set_config('application_name', 'x', false)",    // under its text: the decision reads a constant
		"select * from orders where id = 2; select 'two', 2.5", // two statements
		"delete from orders where id = 3",                      // denied
		"select * from orders where id = 'unterminated",        // unparseable
	}
	for _, q := range texts {
		s.Query(rd, view(q))
		scribble()
	}
	const prep = "prepare p as select * from customers where id = 1"
	s.Query(rd, view(prep))
	scribble()

	fresh := NewSession(Options{})
	fresh.Query(rd, prep)
	before, _ := c.Stats()
	for _, q := range append(texts, "execute p") {
		got, want := s.Query(rd, q), fresh.Query(rd, q)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q after its buffer was overwritten:\n got %+v\nwant %+v", q, got, want)
		}
	}
	// A Bind of the statement SQL PREPARE made is decided with its text.
	got, _ := s.Prepared(rd, "p")
	want, _ := fresh.Prepared(rd, "p")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("a Bind of p after its PREPARE's buffer was overwritten:\n got %+v\nwant %+v", got, want)
	}
	if after, _ := c.Stats(); after-before < 4 {
		t.Errorf("%d cache hits for the texts decided before, want at least 4", after-before)
	}
}
