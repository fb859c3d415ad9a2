package authz

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

func testGrant(a Access) *Grant {
	return &Grant{
		ID:       "gr_123",
		Agent:    "agent-1",
		Resource: "demo-pg",
		Task:     "INC-42: count yesterday's failed orders",
		Access:   a,
		State:    StateActive,
	}
}

// Short names keep the case table readable.
const (
	rd = AccessRead
	wr = AccessWrite
	dl = AccessDDL
	ad = AccessAdmin
)

// postgresCases: each statement under one grant level, the expected verdict,
// and the Kind and Required of the statement that decides it (the first
// refused one, else the first).
var postgresCases = []struct {
	sql      string
	grant    Access
	allow    bool
	kind     string
	required Access
}{
	// Plain reads and writes.
	{"select count(*) from orders", rd, true, "SELECT", rd},
	{"delete from orders", rd, false, "DELETE", wr},
	{"delete from orders", wr, true, "DELETE", wr},
	{"delete from orders where id = 1", ad, true, "DELETE", wr},
	{"insert into orders (id) values (1)", rd, false, "INSERT", wr},
	{"insert into orders (id) values (1) on conflict (id) do nothing", wr, true, "INSERT", wr},
	{"insert into orders (id) values (1) on conflict (id) do update set status = excluded.status", rd, false, "INSERT", wr},
	{"insert into t select * from orders", wr, true, "INSERT", wr},
	{"update orders set status = 'x' where id = 1", rd, false, "UPDATE", wr},
	{"update orders set status = 'x' from customers c where c.id = orders.cid", wr, true, "UPDATE", wr},
	{"delete from orders using customers c where c.id = orders.cid", wr, true, "DELETE", wr},
	{"merge into orders o using src s on o.id = s.id when matched then update set status = s.status", rd, false, "MERGE", wr},
	{"merge into orders o using src s on o.id = s.id when not matched then insert values (s.id)", wr, true, "MERGE", wr},
	{"values (1), (2)", rd, true, "VALUES", rd},
	{"table orders", rd, true, "SELECT", rd},
	{"select * from orders where id = $1", rd, true, "SELECT", rd},

	// Multi-statement messages.
	{"select 1; delete from orders", rd, false, "DELETE", wr},
	{"select 1; delete from orders", wr, true, "SELECT", rd},
	{"select 1; ", rd, true, "SELECT", rd},
	{"select 1;;select 2", rd, true, "SELECT", rd},

	// Data-modifying statements hidden inside reads.
	{"with d as (delete from orders returning *) select * from d", rd, false, "SELECT", wr},
	{"with d as (delete from orders returning *) select * from d", wr, true, "SELECT", wr},
	{"with x as (insert into orders default values returning *) select * from x", rd, false, "SELECT", wr},
	{"with x as (update orders set a = 1 returning *) select * from x", rd, false, "SELECT", wr},
	{"with a as (select 1), b as (delete from orders returning id) select * from a, b", rd, false, "SELECT", wr},
	{"select * from a union select * from b where id in (with d as (delete from orders returning id) select id from d)", rd, false, "SELECT", wr},
	{"select 1 intersect select id from (with d as (update orders set a = 1 returning id) select id from d) s", rd, false, "SELECT", wr},
	{"select 1 union select id from (select id from orders) s intersect select 2", rd, true, "SELECT", rd},
	{"with orders as (select * from orders where id = 1) select * from orders", rd, true, "SELECT", rd},
	{"with recursive t(n) as (select 1 union all select n+1 from t where n < 5) select * from t", rd, true, "SELECT", rd},
	{"copy (delete from orders returning *) to stdout", rd, false, "COPY", wr},

	// SELECT INTO and CREATE TABLE AS create tables.
	{"select * into t2 from orders", rd, false, "SELECT", dl},
	{"select * into t2 from orders", wr, false, "SELECT", dl},
	{"select * into t2 from orders", dl, true, "SELECT", dl},
	{"create table t as select 1", wr, false, "CREATE TABLE AS", dl},
	{"create table t as select 1", dl, true, "CREATE TABLE AS", dl},
	{"create materialized view mv as select * from orders", wr, false, "CREATE MATERIALIZED VIEW", dl},

	// EXPLAIN runs its statement only with ANALYZE.
	{"explain delete from orders", rd, true, "EXPLAIN", rd},
	{"explain analyze delete from orders", rd, false, "EXPLAIN", wr},
	{"explain analyze delete from orders", wr, true, "EXPLAIN", wr},
	{"explain (analyze, buffers) select * from orders", rd, true, "EXPLAIN", rd},
	{"explain (analyze false) delete from orders", rd, true, "EXPLAIN", rd},
	{"explain (analyze on, format json) delete from orders", rd, false, "EXPLAIN", wr},
	{"explain analyze create table t as select 1", wr, false, "EXPLAIN", dl},
	{"explain analyze select nextval('s')", rd, false, "EXPLAIN", wr},
	{"explain select nextval('s')", rd, true, "EXPLAIN", rd},
	{"explain select f()", rd, false, "EXPLAIN", wr},
	{"explain select * from orders where id = txid_current()", rd, false, "EXPLAIN", wr},

	// Row locks.
	{"select * from orders for update", rd, false, "SELECT", wr},
	{"select * from orders for update", wr, true, "SELECT", wr},
	{"select * from orders for share", rd, false, "SELECT", wr},
	{"select * from orders for no key update skip locked", rd, false, "SELECT", wr},
	{"select * from orders for key share", rd, false, "SELECT", wr},
	{"select * from (select * from orders for update) s", rd, false, "SELECT", wr},
	{"declare c cursor for select * from orders for update", rd, false, "DECLARE CURSOR", wr},

	// Functions.
	{"select nextval('s')", rd, false, "SELECT", wr},
	{"select nextval('s')", wr, true, "SELECT", wr},
	{"select setval('s', 1)", rd, false, "SELECT", wr},
	{"select currval('s')", rd, true, "SELECT", rd},
	{"select (select count(*) from (select nextval('s')) x)", rd, false, "SELECT", wr},
	{"select * from orders where id in (select pg_advisory_lock(1))", rd, false, "SELECT", wr},
	{"select pg_try_advisory_lock(1)", rd, false, "SELECT", wr},
	{"select pg_sleep(1)", rd, false, "SELECT", wr},
	{"select pg_catalog.pg_sleep(1)", rd, false, "SELECT", wr},
	{"SELECT PG_SLEEP(1)", rd, false, "SELECT", wr},
	{"select pg_notify('c', 'x')", rd, false, "SELECT", wr},
	{"select txid_current()", rd, false, "SELECT", wr},
	{"select pg_current_xact_id()", rd, false, "SELECT", wr},
	{"select lo_creat(-1)", rd, false, "SELECT", wr},
	{"select pg_logical_emit_message(true, 'x', 'y')", rd, false, "SELECT", wr},
	{"select f()", rd, false, "SELECT", wr},
	{"select f()", wr, true, "SELECT", wr},
	{"select myschema.f()", rd, false, "SELECT", wr},
	{"select public.count(*) from orders", rd, false, "SELECT", wr},
	{`select "COUNT"(*) from orders`, rd, false, "SELECT", wr},
	{"select information_schema._pg_expandarray(array[1])", rd, true, "SELECT", rd},
	{"select * from orders, lateral my_srf(orders.id) x", rd, false, "SELECT", wr},
	{"select pg_terminate_backend(1)", wr, false, "SELECT", ad},
	{"select pg_terminate_backend(1)", ad, true, "SELECT", ad},
	{"select pg_cancel_backend(1)", dl, false, "SELECT", ad},
	{"select pg_reload_conf()", rd, false, "SELECT", ad},
	{"select pg_stat_reset()", rd, false, "SELECT", ad},
	{"select pg_read_file('/etc/passwd')", rd, false, "SELECT", ad},
	{"select pg_ls_dir('.')", rd, false, "SELECT", ad},
	{"select lo_import('/etc/passwd')", wr, false, "SELECT", ad},
	{"select lo_export(1, '/tmp/x')", wr, false, "SELECT", ad},
	{"select dblink('x', 'y')", wr, false, "SELECT", ad},
	{"select dblink_exec('x', 'drop table orders')", dl, false, "SELECT", ad},
	{"select pg_create_logical_replication_slot('s', 'test_decoding')", rd, false, "SELECT", ad},
	{"select query_to_xml('delete from orders returning 1', true, false, '')", wr, false, "SELECT", ad},
	{"select table_to_xml('orders', true, false, '')", rd, false, "SELECT", ad},
	{"select set_config('role', 'postgres', false)", dl, false, "SELECT", ad},
	{"select set_config('ROLE', 'postgres', false)", dl, false, "SELECT", ad},
	{"select set_config(new_value => 'x', setting_name => 'role', is_local => false)", dl, false, "SELECT", ad},
	{"select set_config(current_user, 'x', false)", dl, false, "SELECT", ad},
	{"select set_config('search_path', 'evil', false)", dl, false, "SELECT", ad},
	{"select set_config('application_name', 'x', false)", rd, false, "SELECT", wr},
	{"select set_config('application_name', 'x', false)", wr, true, "SELECT", wr},
	{"select now(), current_timestamp, coalesce(null, 1), greatest(1, 2), lower('A'), length('x')", rd, true, "SELECT", rd},
	{"select date_trunc('day', now()), extract(epoch from now()), to_char(now(), 'YYYY')", rd, true, "SELECT", rd},
	{"select jsonb_build_object('a', 1), json_agg(x) from (select 1 x) s", rd, true, "SELECT", rd},
	{"select row_number() over (order by id), rank() over w from orders window w as (order by id)", rd, true, "SELECT", rd},
	{"select percentile_cont(0.5) within group (order by id) from orders", rd, true, "SELECT", rd},
	{"select string_agg(status, ',') filter (where id > 1) from orders", rd, true, "SELECT", rd},
	{"select * from rows from (generate_series(1, 2), unnest(array[1]))", rd, true, "SELECT", rd},
	{"select substring('abc' from 2), position('b' in 'abc'), trim(' x '), overlay('abc' placing 'x' from 2)", rd, true, "SELECT", rd},
	{"select pg_catalog.pg_get_userbyid(1), pg_catalog.format_type(23, null), has_table_privilege('orders', 'select')", rd, true, "SELECT", rd},

	// Operators are functions too.
	{"select 1 ~~~ 2", rd, false, "SELECT", wr},
	{"select 1 operator(myschema.+) 2", rd, false, "SELECT", wr},
	{"select 1 operator(pg_catalog.+) 2", rd, true, "SELECT", rd},
	{"select * from orders order by id using <<<", rd, false, "SELECT", wr},
	{"select x from orders where status similar to 'a%' and status ilike 'b' and id between 1 and 2", rd, true, "SELECT", rd},
	{"select data->>'a', data #> '{a}', data @> '{}' from orders where tags && array['x']", rd, true, "SELECT", rd},

	// SET, RESET, SHOW.
	{"set role postgres", dl, false, "SET", ad},
	{"set role postgres", ad, true, "SET", ad},
	{"set session authorization bob", dl, false, "SET", ad},
	{"reset role", dl, false, "RESET", ad},
	{"reset all", dl, false, "RESET", ad},
	{"set application_name = 'x'", rd, true, "SET", rd},
	{"set local statement_timeout = '5s'", rd, true, "SET", rd},
	{"SET TIME ZONE 'UTC'", rd, true, "SET", rd},
	{"set names 'utf8'", rd, true, "SET", rd},
	{"set client_encoding = 'SJIS'", dl, false, "SET", ad},
	{"set search_path = evil", dl, false, "SET", ad},
	{"set search_path to default", dl, false, "SET", ad},
	{"set standard_conforming_strings = off", dl, false, "SET", ad},
	{"set myapp.tenant_id = '7'", dl, false, "SET", ad},
	{"reset statement_timeout", rd, true, "RESET", rd},
	{"set transaction isolation level serializable", rd, true, "SET", rd},
	{"show all", rd, true, "SHOW", rd},
	{"show search_path", rd, true, "SHOW", rd},

	// Transactions.
	{"begin", rd, true, "BEGIN", rd},
	{"begin read write", rd, true, "BEGIN", rd},
	{"start transaction isolation level repeatable read", rd, true, "START TRANSACTION", rd},
	{"savepoint a", rd, true, "SAVEPOINT", rd},
	{"rollback to savepoint a", rd, true, "ROLLBACK TO", rd},
	{"release savepoint a", rd, true, "RELEASE", rd},
	{"commit", rd, true, "COMMIT", rd},
	{"rollback", rd, true, "ROLLBACK", rd},
	{"begin; delete from orders; commit", rd, false, "DELETE", wr},
	{"prepare transaction 'x'", dl, false, "PREPARE TRANSACTION", ad},
	{"commit prepared 'x'", dl, false, "COMMIT PREPARED", ad},

	// COPY.
	{"copy orders to stdout", rd, true, "COPY", rd},
	{"copy orders to stdout with (format csv, header)", rd, true, "COPY", rd},
	{"copy (select * from orders where id > 1) to stdout", rd, true, "COPY", rd},
	{"copy orders from stdin", rd, false, "COPY", wr},
	{"copy orders from stdin", wr, true, "COPY", wr},
	{"copy orders to '/tmp/x'", dl, false, "COPY", ad},
	{"copy orders from '/etc/passwd'", dl, false, "COPY", ad},
	{"copy orders from program 'id'", dl, false, "COPY", ad},
	{"copy (select 1) to program 'cat > /tmp/x'", ad, true, "COPY", ad},

	// Cursors, prepared statements, notifications, locks.
	{"declare c cursor with hold for select * from orders", rd, true, "DECLARE CURSOR", rd},
	{"fetch 10 from c", rd, true, "FETCH", rd},
	{"move next in c", rd, true, "MOVE", rd},
	{"close c", rd, true, "CLOSE", rd},
	{"prepare p as select * from orders where id = $1", rd, true, "PREPARE", rd},
	{"prepare p as delete from orders", rd, false, "PREPARE", wr},
	{"prepare p as delete from orders", wr, true, "PREPARE", wr},
	{"execute p", ad, false, "EXECUTE", ad},
	{"explain analyze execute p", ad, false, "EXPLAIN", ad},
	{"create table t2 as execute p", ad, false, "CREATE TABLE AS", dl},
	{"explain execute p", rd, true, "EXPLAIN", rd},
	{"deallocate p", rd, true, "DEALLOCATE", rd},
	{"deallocate all", rd, true, "DEALLOCATE", rd},
	{"discard plans", rd, true, "DISCARD", rd},
	{"discard all", dl, false, "DISCARD", ad},
	{"listen x", rd, true, "LISTEN", rd},
	{"unlisten *", rd, true, "UNLISTEN", rd},
	{"notify x", rd, false, "NOTIFY", wr},
	{"notify x, 'payload'", wr, true, "NOTIFY", wr},
	{"lock table orders", rd, false, "LOCK", wr},
	{"lock table orders in access exclusive mode", wr, true, "LOCK", wr},
	{"set constraints all deferred", rd, true, "SET CONSTRAINTS", rd},

	// Schema changes.
	{"create table t (id int primary key)", wr, false, "CREATE TABLE", dl},
	{"create table t (id int primary key)", dl, true, "CREATE TABLE", dl},
	{"create temp table t (id int)", wr, false, "CREATE TABLE", dl},
	{"alter table orders add column x int", wr, false, "ALTER TABLE", dl},
	{"alter table orders add column y int default pg_terminate_backend(1)", dl, false, "ALTER TABLE", ad},
	{"alter table orders owner to bob", dl, false, "ALTER TABLE", ad},
	{"alter table orders rename to o2", dl, true, "ALTER TABLE", dl},
	{"drop table orders", wr, false, "DROP TABLE", dl},
	{"drop table if exists a, b.c cascade", dl, true, "DROP TABLE", dl},
	{"drop index i", wr, false, "DROP INDEX", dl},
	{"drop schema s cascade", wr, false, "DROP SCHEMA", dl},
	{"truncate orders", wr, false, "TRUNCATE", dl},
	{"truncate orders", dl, true, "TRUNCATE", dl},
	{"create index concurrently on orders (status)", wr, false, "CREATE INDEX", dl},
	{"create view v as select * from orders", wr, false, "CREATE VIEW", dl},
	{"refresh materialized view mv", wr, false, "REFRESH MATERIALIZED VIEW", dl},
	{"create sequence s", wr, false, "CREATE SEQUENCE", dl},
	{"create schema s", wr, false, "CREATE SCHEMA", dl},
	{"create type mood as enum ('sad', 'ok')", wr, false, "CREATE TYPE", dl},
	{"create function f() returns int language sql as $$ select 1 $$", wr, false, "CREATE FUNCTION", dl},
	{"create trigger t before insert on orders for each row execute function f()", wr, false, "CREATE TRIGGER", dl},
	{"create policy p on orders using (true)", wr, false, "CREATE POLICY", dl},
	{"create rule r as on insert to orders do instead nothing", wr, false, "CREATE RULE", dl},
	{"comment on table orders is 'x'", wr, false, "COMMENT", dl},
	{"vacuum orders", wr, false, "VACUUM", dl},
	{"vacuum orders", dl, true, "VACUUM", dl},
	{"analyze orders", wr, false, "ANALYZE", dl},
	{"cluster orders using orders_pkey", wr, false, "CLUSTER", dl},
	{"reindex table orders", wr, false, "REINDEX", dl},

	// Administration.
	{"grant select on orders to x", dl, false, "GRANT", ad},
	{"grant select on orders to x", ad, true, "GRANT", ad},
	{"revoke select on orders from x", dl, false, "REVOKE", ad},
	{"grant pg_read_server_files to x", dl, false, "GRANT", ad},
	{"alter default privileges grant select on tables to x", dl, false, "ALTER DEFAULT PRIVILEGES", ad},
	{"create role bob", dl, false, "CREATE ROLE", ad},
	{"create user bob password 'x'", dl, false, "CREATE USER", ad},
	{"alter role bob superuser", dl, false, "ALTER ROLE", ad},
	{"drop role bob", dl, false, "DROP ROLE", ad},
	{"create database x", dl, false, "CREATE DATABASE", ad},
	{"drop database x", dl, false, "DROP DATABASE", ad},
	{"create extension pgcrypto", dl, false, "CREATE EXTENSION", ad},
	{"drop extension pgcrypto", dl, false, "DROP EXTENSION", ad},
	{"create tablespace t location '/tmp'", dl, false, "CREATE TABLESPACE", ad},
	{"create publication p for all tables", dl, false, "CREATE PUBLICATION", ad},
	{"create subscription s connection 'host=x' publication p", dl, false, "CREATE SUBSCRIPTION", ad},
	{"create server s foreign data wrapper postgres_fdw", dl, false, "CREATE SERVER", ad},
	{"alter system set work_mem = '1GB'", dl, false, "ALTER SYSTEM", ad},
	{"load 'plpgsql'", dl, false, "LOAD", ad},
	{"checkpoint", dl, false, "CHECKPOINT", ad},
	{"do $$begin delete from orders; end$$", dl, false, "DO", ad},
	{"do $$begin delete from orders; end$$", ad, true, "DO", ad},
	{"call p()", dl, false, "CALL", ad},
	{"comment on role bob is 'x'", dl, false, "COMMENT", ad},

	// Lexical corners: comments, quoting, case, white space.
	{"/* a /* b */ c */ delete from orders", rd, false, "DELETE", wr},
	{"/* a /* b */ c */ delete from orders", wr, true, "DELETE", wr},
	{"-- delete from orders\nselect 1", rd, true, "SELECT", rd},
	{"select 1 /* ; delete from orders */", rd, true, "SELECT", rd},
	{"select 1 -- ; delete from orders", rd, true, "SELECT", rd},
	{"select $$; delete from orders; $$", rd, true, "SELECT", rd},
	{"select $tag$ ; delete $tag$", rd, true, "SELECT", rd},
	{"select $a$ $b$ ; $b$ $a$; delete from orders", rd, false, "DELETE", wr},
	{`select E'it\'s; delete from orders'`, rd, true, "SELECT", rd},
	{`select E'\\'; delete from orders; --'`, rd, false, "DELETE", wr},
	{`select 'it''s; delete from orders'`, rd, true, "SELECT", rd},
	{`select U&'\0041'`, rd, true, "SELECT", rd},
	{`select * from "Orders" where "delete" = 1`, rd, true, "SELECT", rd},
	{`delete from "select"`, rd, false, "DELETE", wr},
	{"\t\n  SeLeCt\f1\r\n", rd, true, "SELECT", rd},
	{"DeLeTe\n\tFROM\n\torders", rd, false, "DELETE", wr},
	{"(select 1)", rd, true, "SELECT", rd},

	// Unparseable.
	{"selec 1", ad, false, "UNPARSEABLE", ad},
	{"select 'unterminated", ad, false, "UNPARSEABLE", ad},
	{"select 1; delet from orders", ad, false, "UNPARSEABLE", ad},
	{"select 1\x00; delete from orders", ad, false, "UNPARSEABLE", ad},
}

func TestPostgres(t *testing.T) {
	if len(postgresCases) < 120 {
		t.Fatalf("only %d cases", len(postgresCases))
	}
	for _, tc := range postgresCases {
		t.Run(tc.grant.String()+"/"+tc.sql, func(t *testing.T) {
			v := Postgres(testGrant(tc.grant), tc.sql)
			if len(v.Statements) == 0 {
				t.Fatalf("no decisions")
			}
			d := v.Statements[0]
			for _, s := range v.Statements {
				if s.Rule != "batch" && !s.Allow {
					d = s
					break
				}
			}
			if v.Allow != tc.allow || d.Class.Kind != tc.kind || d.Class.Required != tc.required {
				t.Errorf("got allow=%v kind=%q required=%v (why %q, rule %q, reason %q); want allow=%v kind=%q required=%v",
					v.Allow, d.Class.Kind, d.Class.Required, d.Class.Why, d.Rule, d.Reason, tc.allow, tc.kind, tc.required)
			}
			for _, s := range v.Statements {
				if s.Allow != v.Allow {
					t.Errorf("statement %q allow=%v in a verdict of %v", s.Text, s.Allow, v.Allow)
				}
			}
		})
	}
}

func TestPostgresBatch(t *testing.T) {
	v := Postgres(testGrant(rd), "select 1; delete from orders; select 2")
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

	v = Postgres(testGrant(wr), "select 1; delete from orders; select 2")
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
		stmts, err := ClassifyPostgres(tc.sql)
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
		v := Postgres(testGrant(ad), tc.sql)
		for i, d := range v.Statements {
			if d.Text != tc.want[i] {
				t.Errorf("%q: decision %d text %q, want %q", tc.sql, i, d.Text, tc.want[i])
			}
		}
	}
}

func TestPostgresEmpty(t *testing.T) {
	for _, sql := range []string{"", "   ", "\n\t", "-- only a comment", "/* a /* nested */ comment */", ";", " ; ; "} {
		for _, g := range []*Grant{nil, testGrant(rd)} {
			v := Postgres(g, sql)
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
		v := Postgres(testGrant(ad), tc.sql)
		if v.Allow || len(v.Statements) != 1 {
			t.Fatalf("%q: %+v", tc.sql, v)
		}
		d := v.Statements[0]
		if d.Allow || d.Rule != "unparseable" || d.Text != tc.sql || !strings.Contains(d.Reason, tc.inReason) {
			t.Errorf("%q: %+v, want unparseable with %q in the reason", tc.sql, d, tc.inReason)
		}
		if _, err := ClassifyPostgres(tc.sql); err == nil {
			t.Errorf("%q: ClassifyPostgres gave no error", tc.sql)
		}
	}
}

func TestPostgresNoGrant(t *testing.T) {
	pending := testGrant(ad)
	pending.State = StatePending
	for name, g := range map[string]*Grant{"nil": nil, "none": testGrant(AccessNone), "pending": pending} {
		v := Postgres(g, "select 1; select 2")
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
	v := Postgres(testGrant(rd), "delete from orders")
	want := `DELETE requires write access; grant gr_123 ("INC-42: count yesterday's failed orders") allows read. ` +
		`To run it, request a grant with --access write: airlock request --resource demo-pg --task "INC-42: count yesterday's failed orders" --access write`
	if got := v.Statements[0].Reason; got != want {
		t.Errorf("reason\n got %s\nwant %s", got, want)
	}

	v = Postgres(testGrant(rd), "with d as (delete from orders returning *) select * from d")
	if got := v.Statements[0].Reason; !strings.HasPrefix(got, "SELECT requires write access (DELETE inside a WITH clause); grant gr_123") {
		t.Errorf("reason %q does not lead with the why", got)
	}

	g := testGrant(rd)
	g.Task = "fix $HOME\nthen `rm -rf /`"
	v = Postgres(g, "select pg_terminate_backend(1)")
	r := v.Statements[0].Reason
	if strings.ContainsAny(r, "\n\r") {
		t.Errorf("reason spans lines: %q", r)
	}
	if !strings.Contains(r, "--task 'fix $HOME then `rm -rf /`' --access admin") {
		t.Errorf("task not shell-quoted: %q", r)
	}

	v = Postgres(testGrant(ad), "execute p")
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
			[]string{"customers", "public.orders"}, nil, []string{"count"}},
		{"with d as (delete from orders returning *) select * from d", "DELETE inside a WITH clause",
			nil, []string{"orders"}, nil},
		{"with orders as (select * from orders) select * from orders, orders", "",
			[]string{"orders"}, nil, nil},
		{"select * from orders, (with orders as (select 1) select * from orders) s", "",
			[]string{"orders"}, nil, nil},
		{"select * into t2 from orders", "SELECT INTO creates a table",
			[]string{"orders"}, []string{"t2"}, nil},
		{"explain analyze delete from orders", "EXPLAIN ANALYZE executes DELETE",
			nil, []string{"orders"}, nil},
		{"select * from orders for update", "FOR UPDATE takes row locks",
			[]string{"orders"}, nil, nil},
		{"select nextval('s'), pg_catalog.lower('A'), Lower('b')", "calls nextval, which writes",
			nil, nil, []string{"lower", "nextval"}},
		{"select myschema.f()", "calls myschema.f, which is not known to be read-only",
			nil, nil, []string{"myschema.f"}},
		{"update orders set total = (select sum(x) from items i where i.oid = orders.id)", "",
			[]string{"items"}, []string{"orders"}, []string{"sum"}},
		{"insert into archive.orders select * from orders where created_at < now()", "",
			[]string{"orders"}, []string{"archive.orders"}, []string{"now"}},
		{"create view v as select * from orders", "", []string{"orders"}, []string{"v"}, nil},
		{"copy orders from stdin", "", nil, []string{"orders"}, nil},
		{"drop table a, s.b", "", nil, []string{"a", "s.b"}, nil},
		{"truncate a, b", "", nil, []string{"a", "b"}, nil},
	} {
		stmts, err := ClassifyPostgres(tc.sql)
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
		v := Postgres(testGrant(rd), string(b))
		if !v.Allow || len(v.Statements) != 1 || v.Statements[0].Class.Kind != "SELECT" {
			t.Errorf("%s: %+v", f, v)
		}
	}
}

func TestUnrecognizedStatementIsAdmin(t *testing.T) {
	stmt := &pg_query.Node{Node: &pg_query.Node_ReturnStmt{ReturnStmt: &pg_query.ReturnStmt{}}}
	c, _ := classify(stmt)
	if c.Required != ad || c.Why != "unrecognized statement type ReturnStmt" {
		t.Errorf("%+v", c)
	}
	c, _ = classify(&pg_query.Node{})
	if c.Required != ad {
		t.Errorf("empty node: %+v", c)
	}
}

// The function lists overlap (txid_current is stable in the catalog, so it
// is on the read list too); the stricter list must win.
func TestFunctionListPrecedence(t *testing.T) {
	for name := range adminFuncs {
		if e := funcCallEffect("", name, nil); e.level != ad {
			t.Errorf("%s: %v, want admin", name, e.level)
		}
	}
	for name := range sqlTextFuncs {
		if e := funcCallEffect("", name, nil); e.level != ad {
			t.Errorf("%s: %v, want admin", name, e.level)
		}
	}
	for name := range writeFuncs {
		if e := funcCallEffect("", name, nil); e.level != wr {
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
		if e := funcCallEffect("", name, nil); e.level != rd {
			t.Errorf("%s: %v (%s), want read", name, e.level, e.why)
		}
	}
	for _, name := range []string{"pg_stat_reset_shared", "dblink_connect", "pg_create_physical_replication_slot", "pg_ls_waldir"} {
		if e := funcCallEffect("", name, nil); e.level != ad {
			t.Errorf("%s: %v, want admin", name, e.level)
		}
	}
	for _, name := range []string{"pg_advisory_xact_lock", "pg_try_advisory_lock_shared", "lo_unlink", "lo_put"} {
		if e := funcCallEffect("", name, nil); e.level != wr {
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

func BenchmarkPostgresPointSelect(b *testing.B) {
	g := testGrant(rd)
	const sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"
	b.ReportAllocs()
	for b.Loop() {
		if v := Postgres(g, sql); !v.Allow {
			b.Fatal(v)
		}
	}
}
