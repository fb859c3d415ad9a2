package mysql

import (
	"slices"
	"strings"
	"testing"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

func myOpts() Options {
	return Options{Database: "app", Databases: []string{"app", "reporting"}}
}

// Each step is one message of a session; a step's expectations hold after
// the steps before it.
type sessionStep struct {
	sql   string
	grant *authz.Grant
	allow bool
	rule  string // of the deciding statement; "" for allowed
	kind  string
}

func runMySQLSession(t *testing.T, s *Session, steps []sessionStep) {
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

func TestMySQLSessionPrepareExecute(t *testing.T) {
	rd, wr := authztest.NewGrant(authz.AccessRead), authztest.NewGrant(authz.AccessWrite)
	scoped := authztest.NewGrant(authz.AccessRead)
	scoped.Scope.Tables = []string{"app.orders"}
	runMySQLSession(t, NewSession(myOpts()), []sessionStep{
		{"execute s", rd, false, "indirection", "EXECUTE"},
		{"prepare s from 'select * from orders where id = ?'", rd, true, "", "PREPARE"},
		{"set @id = 1", rd, true, "", "SET"},
		{"execute s using @id", rd, true, "", "EXECUTE"},
		{"EXECUTE S USING @id", scoped, true, "", "EXECUTE"},
		{"prepare d from 'delete from orders where id = ?'", rd, false, "access-level", "PREPARE"},
		{"execute d using @id", wr, false, "indirection", "EXECUTE"},
		{"prepare d from 'delete from orders where id = ?'", wr, true, "", "PREPARE"},
		{"execute d using @id", wr, true, "", "EXECUTE"},
		{"execute d using @id", rd, false, "access-level", "EXECUTE"},
		// MySQL replaces a prepared statement of the same name, unless the
		// PREPARE did not run: EXECUTE must be allowed as both.
		{"prepare s from 'select * from customers'", rd, true, "", "PREPARE"},
		{"execute s", scoped, false, "table-scope", "EXECUTE"},
		{"prepare s from 'select sleep(1)'", wr, true, "", "PREPARE"},
		{"execute s", rd, false, "access-level", "EXECUTE"},
		{"deallocate prepare s", rd, true, "", "DEALLOCATE PREPARE"},
		{"execute s", rd, false, "indirection", "EXECUTE"},
		// A refused message changes nothing.
		{"drop prepare d; delete from orders where id = 1", rd, false, "access-level", "DELETE"},
		{"execute d using @id", wr, true, "", "EXECUTE"},
		{"prepare s from @sql", rd, false, "indirection", "PREPARE"},
	})
}

func TestMySQLSessionUse(t *testing.T) {
	rd := authztest.NewGrant(authz.AccessRead)
	scoped := authztest.NewGrant(authz.AccessRead)
	scoped.Scope.Tables = []string{"app.orders", "reporting.daily"}
	s := NewSession(myOpts())
	runMySQLSession(t, s, []sessionStep{
		{"select * from orders", scoped, true, "", "SELECT"},
		{"use mysql", rd, false, "database", "USE"},
		{"select * from orders", scoped, true, "", "SELECT"},
		{"use reporting", rd, true, "", "USE"},
		{"select * from daily", rd, true, "", "SELECT"},
		// The server may have refused the USE: an unqualified name must be
		// in scope in both databases until the listener says which.
		{"select * from daily", scoped, false, "table-scope", "SELECT"},
		{"select * from orders", scoped, false, "table-scope", "SELECT"},
		{"select * from app.orders", scoped, true, "", "SELECT"},
	})
	if v := s.Query(rd, "select * from daily"); v.Statements[0].Class.TablesRead[0] != "reporting.daily" {
		t.Fatalf("the most recent database first: %+v", v)
	}
	s.SetDatabase("reporting")
	runMySQLSession(t, s, []sessionStep{
		{"select * from daily", scoped, true, "", "SELECT"},
		// Within a message the statements after a USE run only if it
		// succeeded.
		{"use app; select * from orders", scoped, true, "", "USE"},
	})
	if v := s.InitDB(rd, "mysql"); v.Allow || v.Statements[0].Rule != "database" {
		t.Fatalf("COM_INIT_DB into another database: %+v", v)
	}
	if v := s.InitDB(rd, "app"); !v.Allow {
		t.Fatalf("COM_INIT_DB: %+v", v)
	}
	s.SetDatabase("app")
	runMySQLSession(t, s, []sessionStep{{"select * from orders", scoped, true, "", "SELECT"}})
}

func TestMySQLSessionHandler(t *testing.T) {
	rd := authztest.NewGrant(authz.AccessRead)
	scoped := authztest.NewGrant(authz.AccessRead)
	scoped.Scope.Tables = []string{"app.orders"}
	s := NewSession(myOpts())
	runMySQLSession(t, s, []sessionStep{
		{"handler orders open as h", scoped, true, "", "HANDLER OPEN"},
		{"handler h read first", scoped, true, "", "HANDLER READ"},
		{"handler h close", scoped, true, "", "HANDLER CLOSE"},
		{"handler customers open as h2", rd, true, "", "HANDLER OPEN"},
		{"handler h2 read next", scoped, false, "table-scope", "HANDLER READ"},
	})
	v := s.Query(rd, "handler h2 read next")
	if got := v.Statements[0].Class.TablesRead; !slices.Equal(got, []string{"app.customers"}) {
		t.Fatalf("a handler reads its table: %v", got)
	}
}

func TestMySQLPrepareProtocol(t *testing.T) {
	rd := authztest.NewGrant(authz.AccessRead)
	s := NewSession(myOpts())
	for _, tc := range []struct {
		sql   string
		allow bool
		rule  string
	}{
		{"select * from orders where id = ?", true, ""},
		{"select 1; select 2", false, "multi-statement-parse"},
		{"use reporting", false, "indirection"},
		{"prepare s from 'select 1'", false, "indirection"},
		{"execute s", false, "indirection"},
		{"handler orders open", false, "indirection"},
		{"delete from orders where id = ?", false, "access-level"},
	} {
		v := s.Prepare(rd, tc.sql)
		if v.Allow != tc.allow || !v.Allow && authztest.Deciding(v).Rule != tc.rule {
			t.Errorf("%q: %+v", tc.sql, v)
		}
	}
	// COM_STMT_PREPARE changes no session state.
	if v := s.Query(rd, "select * from orders"); v.Statements[0].Class.TablesRead[0] != "app.orders" {
		t.Errorf("%+v", v)
	}
}

func TestMySQLStatementText(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want []string
	}{
		{"select 1", []string{"select 1"}},
		{"select 1; ", []string{"select 1"}},
		{"  /* c */ select 1 ;  select 2;;", []string{"/* c */ select 1", "select 2"}},
		{"select ';'; select `;`", []string{"select ';'", "select `;`"}},
		{"select 1 # x\n; select 2", []string{"select 1 # x", "select 2"}},
		{"select /*!40101 1; */", nil},
		{"select 'é';select 2", []string{"select 'é'", "select 2"}},
	} {
		v := Query(authztest.NewGrant(authz.AccessAdmin), tc.sql, myOpts())
		var got []string
		if v.Allow || tc.want != nil {
			for _, d := range v.Statements {
				got = append(got, d.Text)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: texts %q, want %q", tc.sql, got, tc.want)
		}
	}
}

func TestMyLexClean(t *testing.T) {
	for _, tc := range []struct {
		sql   string
		o     myLexOpts
		clean []string
	}{
		{"select 1 /* x */ + 2", myLexOpts{}, []string{"select 1         + 2"}},
		{"select /*!40101 1 */", myLexOpts{}, []string{"select          1"}},
		{"select /*!99999 1 */ 2", myLexOpts{server: parseServerVersion("8.0.36")}, []string{"select               2"}},
		{"select 1 -- x\n, 2", myLexOpts{}, []string{"select 1     \n, 2"}},
		{"select 'a\\'' # x", myLexOpts{}, []string{"select 'a\\''"}},
		{"select 'a\\' # x", myLexOpts{noBackslashEscapes: true}, []string{"select 'a\\'"}},
		{`select "a" # x`, myLexOpts{ansiQuotes: true}, []string{`select "a"`}},
		{`select "a\" # x", 1`, myLexOpts{}, []string{`select "a\" # x", 1`}},
	} {
		segs, err := myLex(tc.sql, tc.o)
		if err != nil {
			t.Fatalf("%q: %v", tc.sql, err)
		}
		var got []string
		for _, s := range segs {
			got = append(got, strings.TrimSpace(s.clean))
		}
		if !slices.Equal(got, tc.clean) {
			t.Errorf("%q: clean %q, want %q", tc.sql, got, tc.clean)
		}
	}
}

func TestParseServerVersion(t *testing.T) {
	for v, want := range map[string]myServer{
		"8.0.36":                          {known: true, version: 80036},
		"8.0.36-0ubuntu0.22.04.1":         {known: true, version: 80036},
		"8.4.0-commercial":                {known: true, version: 80400},
		"5.5.5-10.11.6-MariaDB-0+deb12u1": {known: true, mariadb: true, version: 101106},
		"11.4.2-MariaDB":                  {known: true, mariadb: true, version: 110402},
		"":                                {},
		"banana":                          {},
		"8.0":                             {},
	} {
		if got := parseServerVersion(v); got != want {
			t.Errorf("%q: %+v, want %+v", v, got, want)
		}
	}
}

func TestMySQLReasons(t *testing.T) {
	g := authztest.NewGrant(authz.AccessRead)
	g.Resource = "shop-mysql"
	g.Scope.Tables = []string{"app.orders"}
	g.Scope.MaxTables = 3
	v := Query(g, "select * from customers", myOpts())
	r := v.Statements[0].Reason
	for _, want := range []string{"app.customers", "outside the tables", "--table app.orders --max-tables 3 --table app.customers", "--resource shop-mysql"} {
		if !strings.Contains(r, want) {
			t.Errorf("reason %q lacks %q", r, want)
		}
	}
	v = Query(g, "select /*!80000 1 */", myOpts())
	if r := v.Statements[0].Reason; !strings.Contains(r, "/*!80000") || !strings.Contains(r, "position 8") {
		t.Errorf("lexical reason %q", r)
	}
	v = Query(g, "selec 1", myOpts())
	if d := v.Statements[0]; d.Rule != "unparseable" || !strings.Contains(d.Reason, "as MySQL SQL") || d.Text != "selec 1" {
		t.Errorf("unparseable: %+v", d)
	}
	w := authztest.NewGrant(authz.AccessWrite)
	v = Query(w, "delete from orders", myOpts())
	if r := v.Statements[0].Reason; !strings.Contains(r, "--allow-unfiltered") {
		t.Errorf("unfiltered reason %q", r)
	}
}

func TestMySQLNoGrant(t *testing.T) {
	pending := authztest.NewGrant(authz.AccessAdmin)
	pending.State = authz.StatePending
	for name, g := range map[string]*authz.Grant{"nil": nil, "none": authztest.NewGrant(authz.AccessNone), "pending": pending} {
		v := Query(g, "select 1; select 2", myOpts())
		if v.Allow || len(v.Statements) != 2 {
			t.Fatalf("%s: %+v", name, v)
		}
		for _, d := range v.Statements {
			if d.Allow || d.Rule != "no-grant" {
				t.Errorf("%s: %+v", name, d)
			}
		}
	}
}

func TestSafeMySQLCharset(t *testing.T) {
	for cs, want := range map[string]bool{
		"utf8mb4": true, "UTF8": true, "latin1": true, "binary": true, "ascii": true,
		"gbk": false, "sjis": false, "big5": false, "cp932": false, "gb18030": false, "ucs2": false, "utf16": false, "": false,
	} {
		if got := SafeCharset(cs); got != want {
			t.Errorf("%q: %v, want %v", cs, got, want)
		}
	}
}
