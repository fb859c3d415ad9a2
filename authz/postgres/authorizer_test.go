package postgres

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// Short names keep the case table readable.
const (
	rd = authz.AccessRead
	wr = authz.AccessWrite
	dl = authz.AccessDDL
	ad = authz.AccessAdmin
)

func TestPostgresBatch(t *testing.T) {
	v := Query(authztest.NewGrant(rd), "select 1; delete from orders; select 2")
	if v.Allow || len(v.Statements) != 3 {
		t.Fatalf("verdict %+v", v)
	}
	wantRules := []string{"batch", "access-level", "batch"}
	for i, d := range v.Statements {
		if d.Allow || d.Rule != wantRules[i] {
			t.Errorf("statement %d: allow=%v rule=%q, want refused by %q", i+1, d.Allow, d.Rule, wantRules[i])
		}
	}
	if got, want := v.Statements[0].Reason, "not executed: statement 2 of this message was refused"; got != want {
		t.Errorf("batch reason %q, want %q", got, want)
	}

	v = Query(authztest.NewGrant(wr), "select 1; delete from orders where id = 1; select 2")
	if !v.Allow {
		t.Fatalf("write grant refused: %+v", v)
	}
	for _, d := range v.Statements {
		if !d.Allow || d.Rule != "access-level" || d.Reason != "" {
			t.Errorf("%q: allow=%v rule=%q reason=%q", d.Text, d.Allow, d.Rule, d.Reason)
		}
	}
}

func TestPostgresStatementText(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want []string
	}{
		{"select 1", []string{"select 1"}},
		{"select 1; ", []string{"select 1"}},
		{"  /* c */ select 1 ;  select 2;;", []string{"/* c */ select 1", "select 2"}},
		{"select 1;\n\tdelete from orders\n", []string{"select 1", "delete from orders"}},
		{"select ';'; select $$;$$", []string{"select ';'", "select $$;$$"}},
		{"SELECT 1 -- trailing", []string{"SELECT 1 -- trailing"}},
		{"select 'é';select 2", []string{"select 'é'", "select 2"}},
	} {
		stmts, err := Classify(tc.sql)
		if err != nil {
			t.Fatalf("%q: %v", tc.sql, err)
		}
		var got []string
		for _, s := range stmts {
			got = append(got, s.Text)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: texts %q, want %q", tc.sql, got, tc.want)
		}
		v := Query(authztest.NewGrant(ad), tc.sql)
		for i, d := range v.Statements {
			if d.Text != tc.want[i] {
				t.Errorf("%q: decision %d text %q, want %q", tc.sql, i, d.Text, tc.want[i])
			}
		}
	}
}

func TestPostgresEmpty(t *testing.T) {
	for _, sql := range []string{"", "   ", "\n\t", "-- only a comment", "/* a /* nested */ comment */", ";", " ; ; "} {
		for _, g := range []*authz.Grant{nil, authztest.NewGrant(rd)} {
			v := Query(g, sql)
			if !v.Allow || v.Statements != nil {
				t.Errorf("%q: %+v, want allowed with no statements", sql, v)
			}
		}
	}
}

func TestPostgresUnparseable(t *testing.T) {
	for _, tc := range []struct{ sql, inReason string }{
		{"selec 1", `syntax error at or near "selec"`},
		{"select 1; delet from orders", `syntax error at or near "delet"`},
		{"select 'unterminated", "unterminated quoted string"},
		{"select 1\x00; delete from orders", "NUL byte"},
	} {
		v := Query(authztest.NewGrant(ad), tc.sql)
		if v.Allow || len(v.Statements) != 1 {
			t.Fatalf("%q: %+v", tc.sql, v)
		}
		d := v.Statements[0]
		if d.Allow || d.Rule != "unparseable" || d.Text != tc.sql || !strings.Contains(d.Reason, tc.inReason) {
			t.Errorf("%q: %+v, want unparseable with %q in the reason", tc.sql, d, tc.inReason)
		}
		// The gateway puts "airlock: " before a reason it tells the
		// client; a reason starting with airlock again reads doubled.
		if strings.HasPrefix(d.Reason, "airlock") {
			t.Errorf("%q: reason %q starts with airlock (the client reads \"airlock: airlock ...\")", tc.sql, d.Reason)
		}
		if _, err := Classify(tc.sql); err == nil {
			t.Errorf("%q: Classify gave no error", tc.sql)
		}
	}
}

func TestPostgresNoGrant(t *testing.T) {
	pending := authztest.NewGrant(ad)
	pending.State = authz.StatePending
	for name, g := range map[string]*authz.Grant{"nil": nil, "none": authztest.NewGrant(authz.AccessNone), "pending": pending} {
		v := Query(g, "select 1; select 2")
		if v.Allow || len(v.Statements) != 2 {
			t.Fatalf("%s: %+v", name, v)
		}
		for _, d := range v.Statements {
			if d.Allow || d.Rule != "no-grant" || !strings.Contains(d.Reason, "airlock request") {
				t.Errorf("%s: %+v", name, d)
			}
		}
	}
}

func TestPostgresReason(t *testing.T) {
	v := Query(authztest.NewGrant(rd), "delete from orders")
	want := `DELETE requires write access; grant gr_123 ("INC-42: count yesterday's failed orders") allows read. ` +
		`To run it, request a grant with --access write: airlock request --resource demo-pg --task "INC-42: count yesterday's failed orders" --access write`
	if got := v.Statements[0].Reason; got != want {
		t.Errorf("reason\n got %s\nwant %s", got, want)
	}

	v = Query(authztest.NewGrant(rd), "with d as (delete from orders returning *) select * from d")
	if got := v.Statements[0].Reason; !strings.HasPrefix(got, "SELECT requires write access (DELETE inside a WITH clause); grant gr_123") {
		t.Errorf("reason %q does not lead with the why", got)
	}

	g := authztest.NewGrant(rd)
	g.Task = "fix $HOME\nthen `rm -rf /`"
	v = Query(g, "select pg_terminate_backend(1)")
	r := v.Statements[0].Reason
	if strings.ContainsAny(r, "\n\r") {
		t.Errorf("reason spans lines: %q", r)
	}
	if !strings.Contains(r, "--task 'fix $HOME then `rm -rf /`' --access admin") {
		t.Errorf("task not shell-quoted: %q", r)
	}

	v = Query(authztest.NewGrant(ad), "execute p")
	if d := v.Statements[0]; d.Rule != "indirection" || !strings.Contains(d.Reason, "extended protocol") {
		t.Errorf("execute: %+v", d)
	}
}

func TestClassifyPostgresDetails(t *testing.T) {
	for _, tc := range []struct {
		sql                  string
		why                  string
		read, written, funcs []string
	}{
		{"select count(*) from public.orders o join customers c on c.id = o.cid", "",
			[]string{"public.customers", "public.orders"}, nil, []string{"count"}},
		{"with d as (delete from orders returning *) select * from d", "DELETE inside a WITH clause",
			nil, []string{"public.orders"}, nil},
		{"with orders as (select * from orders) select * from orders, orders", "",
			[]string{"public.orders"}, nil, nil},
		{"select * from orders, (with orders as (select 1) select * from orders) s", "",
			[]string{"public.orders"}, nil, nil},
		{"select * into t2 from orders", "SELECT INTO creates a table",
			[]string{"public.orders"}, []string{"public.t2"}, nil},
		{"explain analyze delete from orders", "EXPLAIN ANALYZE executes DELETE",
			nil, []string{"public.orders"}, nil},
		{"select * from orders for update", "FOR UPDATE takes row locks",
			[]string{"public.orders"}, nil, nil},
		{"select nextval('s'), pg_catalog.lower('A'), Lower('b')", "calls nextval, which writes",
			nil, nil, []string{"lower", "nextval"}},
		{"select myschema.f()", "calls myschema.f, which is not known to be read-only",
			nil, nil, []string{"myschema.f"}},
		{"update orders set total = (select sum(x) from items i where i.oid = orders.id)", "",
			[]string{"public.items"}, []string{"public.orders"}, []string{"sum"}},
		{"insert into archive.orders select * from orders where created_at < now()", "",
			[]string{"public.orders"}, []string{"archive.orders"}, []string{"now"}},
		{"create view v as select * from orders", "", []string{"public.orders"}, []string{"public.v"}, nil},
		{"copy orders from stdin", "", nil, []string{"public.orders"}, nil},
		{"drop table a, s.b", "", nil, []string{"public.a", "s.b"}, nil},
		{"truncate a, b", "", nil, []string{"public.a", "public.b"}, nil},
	} {
		stmts, err := Classify(tc.sql)
		if err != nil || len(stmts) != 1 {
			t.Fatalf("%q: %v %+v", tc.sql, err, stmts)
		}
		c := stmts[0].Class
		if c.Why != tc.why || !slices.Equal(c.TablesRead, tc.read) || !slices.Equal(c.TablesWritten, tc.written) || !slices.Equal(c.Functions, tc.funcs) {
			t.Errorf("%q:\n got why=%q read=%q written=%q funcs=%q\nwant why=%q read=%q written=%q funcs=%q",
				tc.sql, c.Why, c.TablesRead, c.TablesWritten, c.Functions, tc.why, tc.read, tc.written, tc.funcs)
		}
	}
}

// The queries psql 15 sends for \d, \dt, \d+ and friends, captured with
// psql -E, must all run under a read grant.
func TestPsqlCatalogQueries(t *testing.T) {
	files, err := filepath.Glob("testdata/psql15/*.sql")
	if err != nil || len(files) < 40 {
		t.Fatalf("psql queries: %d files, %v", len(files), err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v := Query(authztest.NewGrant(rd), string(b))
		if !v.Allow || len(v.Statements) != 1 || v.Statements[0].Class.Kind != "SELECT" {
			t.Errorf("%s: %+v", f, v)
		}
	}
}

func TestUnrecognizedStatementIsAdmin(t *testing.T) {
	classOf := func(n *pg_query.Node) authz.Classification {
		kind, a := classify(n)
		m := pgStmt{kind: kind, a: a}
		return m.resolve(defaultPGSchema).Class
	}
	stmt := &pg_query.Node{Node: &pg_query.Node_ReturnStmt{ReturnStmt: &pg_query.ReturnStmt{}}}
	c := classOf(stmt)
	if c.Required != ad || c.Why != "unrecognized statement type ReturnStmt" {
		t.Errorf("%+v", c)
	}
	c = classOf(&pg_query.Node{})
	if c.Required != ad {
		t.Errorf("empty node: %+v", c)
	}
}

// The function lists overlap (txid_current is stable in the catalog, so it
// is on the read list too); the stricter list must win.
func TestFunctionListPrecedence(t *testing.T) {
	for name := range adminFuncs {
		if e := (&analysis{}).funcCallEffect("", name, nil); e.level != ad {
			t.Errorf("%s: %v, want admin", name, e.level)
		}
	}
	for name := range sqlTextFuncs {
		if e := (&analysis{}).funcCallEffect("", name, nil); e.level != ad {
			t.Errorf("%s: %v, want admin", name, e.level)
		}
	}
	for name := range writeFuncs {
		if e := (&analysis{}).funcCallEffect("", name, nil); e.level != wr {
			t.Errorf("%s: %v, want write", name, e.level)
		}
	}
	for _, name := range []string{
		"count", "sum", "avg", "min", "max", "now", "lower", "upper", "length", "substr", "substring",
		"btrim", "concat", "date_trunc", "extract", "date_part", "to_char", "to_date", "to_timestamp",
		"abs", "round", "floor", "ceil", "array_agg", "string_agg", "jsonb_build_object", "json_agg",
		"jsonb_agg", "row_to_json", "to_jsonb", "jsonb_array_elements", "json_build_object",
		"generate_series", "random", "md5", "encode", "decode", "version", "current_setting",
		"pg_typeof", "format", "regexp_replace", "regexp_match", "regexp_matches", "split_part",
		"replace", "position", "left", "right", "lpad", "rpad", "age", "date", "unnest", "row_number",
		"rank", "dense_rank", "lag", "lead", "first_value", "last_value", "ntile", "percentile_cont",
		"percentile_disc", "bool_and", "bool_or", "every", "stddev", "variance", "pg_get_userbyid",
		"pg_get_expr", "pg_get_indexdef", "pg_get_constraintdef", "pg_get_viewdef",
		"pg_table_is_visible", "format_type", "obj_description", "col_description",
		"pg_relation_size", "pg_total_relation_size", "pg_size_pretty", "pg_encoding_to_char",
		"array_to_string", "quote_ident", "quote_literal", "has_table_privilege",
		"has_schema_privilege", "pg_is_in_recovery", "current_database", "current_schema",
		"current_schemas", "inet_server_addr", "pg_backend_pid", "clock_timestamp", "gen_random_uuid",
	} {
		if e := (&analysis{}).funcCallEffect("", name, nil); e.level != rd {
			t.Errorf("%s: %v (%s), want read", name, e.level, e.why)
		}
	}
	for _, name := range []string{"pg_stat_reset_shared", "dblink_connect", "pg_create_physical_replication_slot", "pg_ls_waldir"} {
		if e := (&analysis{}).funcCallEffect("", name, nil); e.level != ad {
			t.Errorf("%s: %v, want admin", name, e.level)
		}
	}
	for _, name := range []string{"pg_advisory_xact_lock", "pg_try_advisory_lock_shared", "lo_unlink", "lo_put"} {
		if e := (&analysis{}).funcCallEffect("", name, nil); e.level != wr {
			t.Errorf("%s: %v, want write", name, e.level)
		}
	}
}

func TestAsciiSafeEncoding(t *testing.T) {
	for enc, want := range map[string]bool{
		"UTF8": true, "utf-8": true, "LATIN1": true, "WIN1252": true, "EUC_JP": true, "ISO_8859_5": true,
		"SJIS": false, "BIG5": false, "GBK": false, "GB18030": false, "UHC": false, "JOHAB": false, "": false,
	} {
		if got := asciiSafeEncoding(enc); got != want {
			t.Errorf("%q: %v, want %v", enc, got, want)
		}
	}
}
