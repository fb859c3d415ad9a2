package postgres

import (
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// Each step is one message of a session; a step's expectations hold after
// the steps before it.
type sessionStep struct {
	sql   string
	grant *authz.Grant
	allow bool
	rule  string // of the deciding statement; "" for allowed
	kind  string
}

func runPGSession(t *testing.T, s *Session, steps []sessionStep) {
	t.Helper()
	for i, st := range steps {
		v := s.Query(st.grant, st.sql)
		d := authztest.Deciding(v)
		rule := ""
		if !v.Allow {
			rule = d.Rule
		}
		if v.Allow != st.allow || rule != st.rule || st.kind != "" && d.Class.Kind != st.kind {
			t.Fatalf("step %d %q: allow=%v rule=%q kind=%q (%s); want allow=%v rule=%q kind=%q",
				i+1, st.sql, v.Allow, rule, d.Class.Kind, d.Reason, st.allow, st.rule, st.kind)
		}
	}
}

func TestPGSessionPrepareExecute(t *testing.T) {
	rd, wr := authztest.NewGrant(authz.AccessRead), authztest.NewGrant(authz.AccessWrite)
	scoped := authztest.NewGrant(authz.AccessRead)
	scoped.Scope.Tables = []string{"public.orders"}
	runPGSession(t, NewSession(Options{}), []sessionStep{
		{"execute p", rd, false, "indirection", "EXECUTE"},
		{"prepare p as select * from orders where id = $1", rd, true, "", "PREPARE"},
		{"execute p(1)", rd, true, "", "EXECUTE"},
		{"explain analyze execute p(1)", rd, true, "", "EXPLAIN"},
		{"execute p(nextval('s'))", rd, false, "access-level", "EXECUTE"},
		// A prepared statement the session was refused does not exist.
		{"prepare d as delete from orders where id = $1", rd, false, "access-level", "PREPARE"},
		{"execute d(1)", wr, false, "indirection", "EXECUTE"},
		// Prepared under write, executed under the grant in force now.
		{"prepare d as delete from orders where id = $1", wr, true, "", "PREPARE"},
		{"execute d(1)", wr, true, "", "EXECUTE"},
		{"execute d(1)", rd, false, "access-level", "EXECUTE"},
		{"execute p(1)", scoped, true, "", "EXECUTE"},
		// The server refuses a second PREPARE of a name unless the first
		// failed; airlock does not know which, so EXECUTE must be allowed
		// as both.
		{"prepare p as select * from customers", rd, true, "", "PREPARE"},
		{"execute p(1)", rd, true, "", "EXECUTE"},
		{"execute p(1)", scoped, false, "table-scope", "EXECUTE"},
		{"deallocate p", rd, true, "", "DEALLOCATE"},
		{"execute p(1)", rd, false, "indirection", "EXECUTE"},
		{"prepare p as select * from customers", rd, true, "", "PREPARE"},
		{"execute p", scoped, false, "table-scope", "EXECUTE"},
		// A refused message changes nothing, even the statements of it
		// that were allowed.
		{"deallocate p; delete from orders", rd, false, "access-level", "DELETE"},
		{"execute p", rd, true, "", "EXECUTE"},
		{"deallocate all", rd, true, "", "DEALLOCATE"},
		{"execute p", rd, false, "indirection", "EXECUTE"},
		{"execute d(1)", wr, false, "indirection", "EXECUTE"},
	})
}

func TestPGSessionExecuteInheritsGuardrails(t *testing.T) {
	wr := authztest.NewGrant(authz.AccessWrite)
	unf := authztest.NewGrant(authz.AccessWrite)
	unf.Scope.AllowUnfiltered = true
	runPGSession(t, NewSession(Options{}), []sessionStep{
		{"prepare u as update orders set status = $1", wr, false, "unfiltered", "PREPARE"},
		{"prepare u as update orders set status = $1", unf, true, "", "PREPARE"},
		{"execute u('x')", wr, false, "unfiltered", "EXECUTE"},
		{"execute u('x')", unf, true, "", "EXECUTE"},
		{"create table t9 as execute u('x')", unf, false, "access-level", "CREATE TABLE AS"},
	})
}

func TestPGSessionParse(t *testing.T) {
	rd, wr := authztest.NewGrant(authz.AccessRead), authztest.NewGrant(authz.AccessWrite)
	s := NewSession(Options{})
	if v := s.Parse(rd, "s1", "select * from orders where id = $1"); !v.Allow {
		t.Fatalf("parse: %+v", v)
	}
	// A statement named by Parse is the one SQL EXECUTE finds.
	if v := s.Query(rd, "execute s1(1)"); !v.Allow {
		t.Fatalf("execute of a parsed statement: %+v", v)
	}
	// A second Parse of the name (the first may have failed upstream):
	// EXECUTE must be allowed as both.
	if v := s.Parse(rd, "s1", "select nextval('s')"); v.Allow {
		t.Fatalf("%+v", v)
	}
	if v := s.Parse(wr, "s1", "select nextval('s')"); !v.Allow {
		t.Fatalf("%+v", v)
	}
	if v := s.Query(rd, "execute s1(1)"); v.Allow {
		t.Fatalf("execute of a name that may be a write: %+v", v)
	}
	for range 2 {
		s.Parse(rd, "s1", "select 1")
	}
	if v := s.Parse(rd, "s1", "select 1"); v.Allow || v.Statements[0].Rule != "indirection" {
		t.Fatalf("fifth parse of a name: %+v", v)
	}
	// The unnamed statement is replaced by every Parse.
	for range 2 {
		if v := s.Parse(rd, "", "select 1"); !v.Allow {
			t.Fatalf("unnamed parse: %+v", v)
		}
	}
	if v := s.Parse(rd, "s2", "select 1; select 2"); v.Allow || v.Statements[0].Rule != "multi-statement-parse" {
		t.Fatalf("multi-statement parse: %+v", v)
	}
	if v := s.Parse(rd, "s3", "delete from orders where id = $1"); v.Allow {
		t.Fatalf("refused parse allowed: %+v", v)
	}
	if v := s.Query(wr, "execute s3(1)"); v.Allow {
		t.Fatalf("execute of a refused parse: %+v", v)
	}
	// A Bind of a statement made with SQL PREPARE.
	s.Query(rd, "prepare q as select * from orders where id = $1")
	if v, ok := s.Prepared(rd, "q"); !ok || !v.Allow || v.Statements[0].Class.Kind != "EXECUTE" || v.Statements[0].Class.Required != authz.AccessRead ||
		v.Statements[0].Text != "prepare q as select * from orders where id = $1" {
		t.Fatalf("Prepared: %v %+v", ok, v)
	}
	if v, ok := s.Prepared(authztest.NewGrant(authz.AccessNone), "q"); !ok || v.Allow {
		t.Fatalf("Prepared under no grant: %+v", v)
	}
	if _, ok := s.Prepared(rd, "nope"); ok {
		t.Fatal("Prepared of an unknown name")
	}
	s.CloseStatement("s1")
	if v := s.Query(rd, "execute s1(1)"); v.Allow {
		t.Fatalf("execute after Close: %+v", v)
	}
	if v := s.Parse(rd, "s1", "select 1"); !v.Allow {
		t.Fatalf("parse after Close: %+v", v)
	}
}

func TestPGSessionDefaultSchema(t *testing.T) {
	g := authztest.NewGrant(authz.AccessRead)
	g.Scope.Tables = []string{"shop.*"}
	s := NewSession(Options{DefaultSchema: "shop"})
	v := s.Query(g, "select * from orders, pg_class")
	if !v.Allow || strings.Join(v.Statements[0].Class.TablesRead, ",") != "pg_catalog.pg_class,shop.orders" {
		t.Fatalf("%+v", v)
	}
	if v := s.Query(g, "select * from public.orders"); v.Allow {
		t.Fatalf("public.orders under shop.*: %+v", v)
	}
}

func TestPostgresStatelessExecute(t *testing.T) {
	v := Query(authztest.NewGrant(authz.AccessAdmin), "execute p")
	if d := v.Statements[0]; v.Allow || d.Rule != "indirection" || !strings.Contains(d.Reason, "session") {
		t.Fatalf("%+v", v)
	}
	// Within one message the stateless authorizer still follows PREPARE.
	if v := Query(authztest.NewGrant(authz.AccessRead), "prepare p as select 1; execute p"); !v.Allow {
		t.Fatalf("%+v", v)
	}
}
