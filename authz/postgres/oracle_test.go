package authz

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/testenv"
)

// The differential oracle: every corpus statement the authorizer allows
// under a plain read grant is run on the real server inside a read-only
// transaction, and must not fail with the server's read-only error
// (Postgres SQLSTATE 25006, MariaDB error 1792). Such a failure means the
// server found a write that airlock took for a read.
//
// The session also defaults to read-only transactions, so a COMMIT inside
// a message does not let what follows it write. Statements that fail for
// other reasons (a missing object, an argument the server rejects) are
// counted and logged; the schema below creates what the corpus names so
// that most of them run for real.

// oracleSchemaPG is what the Postgres corpus's reads name, beyond the
// sample schema.
const oracleSchemaPG = `
CREATE TABLE items (id serial PRIMARY KEY, oid int, cid int, x int);
CREATE TABLE src (id int, status text);
CREATE TABLE t (id int, a int);
CREATE TABLE a (id int);
CREATE TABLE b (id int);
CREATE TABLE "Orders" (id int, status text, "delete" int);
CREATE SEQUENCE s;
ALTER TABLE orders ADD COLUMN data jsonb DEFAULT '{}', ADD COLUMN tags text[] DEFAULT '{}', ADD COLUMN cid int, ADD COLUMN total numeric, ADD COLUMN a int, ADD COLUMN x int;
CREATE SCHEMA archive;
CREATE TABLE archive.orders (LIKE orders);
`

// oracleSchemaMySQL is the same for the MySQL corpus.
const oracleSchemaMySQL = `
CREATE DATABASE IF NOT EXISTS reporting;
CREATE TABLE reporting.daily (id INT PRIMARY KEY, day DATE, total DECIMAL(10, 2));
CREATE TABLE reporting.t (id INT);
`

// oracleCase is a corpus statement the authorizer allowed under read.
type oracleCase struct {
	c corpusCase
	v Verdict
}

// oracleTally counts what the server said.
type oracleTally struct {
	ran, failed   int
	errs          map[string]int
	disagreements []string
}

func (o *oracleTally) log(t *testing.T, name string, allowed int) {
	keys := make([]string, 0, len(o.errs))
	for k := range o.errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, o.errs[k]))
	}
	t.Logf("%s oracle: %d corpus messages allowed under read; %d ran without error, %d failed with other errors (%s); %d read-only violations",
		name, allowed, o.ran, o.failed, strings.Join(parts, " "), len(o.disagreements))
	for _, d := range o.disagreements {
		t.Errorf("%s: read-only transaction refused a statement airlock allows under read: %s", name, d)
	}
}

func TestOracle(t *testing.T) {
	t.Run("postgres", testOraclePostgres)
	t.Run("mariadb", testOracleMariaDB)
}

func testOraclePostgres(t *testing.T) {
	var cases []oracleCase
	rd := testGrant(AccessRead)
	for _, c := range readCorpus(t, "postgres.tsv") {
		v := NewPGSession(PGOptions{}).Postgres(rd, c.sql)
		if v.Allow && len(v.Statements) > 0 {
			cases = append(cases, oracleCase{c, v})
		}
	}
	if len(cases) < 100 {
		t.Fatalf("only %d postgres corpus messages allowed under read", len(cases))
	}
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{InitSQL: testenv.SampleSchema + oracleSchemaPG})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg, err := pgx.ParseConfig(pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	// Every transaction of the session is read-only unless a statement
	// asks otherwise, and RESET (DISCARD ALL) returns to these.
	cfg.RuntimeParams["default_transaction_read_only"] = "on"
	cfg.RuntimeParams["statement_timeout"] = "5s"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	pc := conn.PgConn()
	tally := oracleTally{errs: map[string]int{}}
	for _, oc := range cases {
		if _, err := pc.Exec(ctx, "BEGIN READ ONLY").ReadAll(); err != nil {
			t.Fatalf("begin: %v", err)
		}
		var runErr error
		if strings.HasPrefix(strings.ToLower(oc.v.Statements[0].Text), "copy") && len(oc.v.Statements) == 1 {
			_, runErr = pc.CopyTo(ctx, io.Discard, oc.c.sql)
		} else {
			_, runErr = pc.Exec(ctx, oc.c.sql).ReadAll()
		}
		var pgErr *pgconn.PgError
		switch {
		case runErr == nil:
			tally.ran++
		case errors.As(runErr, &pgErr) && pgErr.Code == "25006":
			tally.disagreements = append(tally.disagreements, fmt.Sprintf("%s %q: %s", oc.c, oc.c.sql, pgErr.Message))
		case errors.As(runErr, &pgErr):
			tally.failed++
			tally.errs[pgErr.Code]++
			t.Logf("%s %q: %s %s", oc.c, oc.c.sql, pgErr.Code, pgErr.Message)
		default:
			t.Fatalf("%s %q: %v", oc.c, oc.c.sql, runErr)
		}
		if _, err := pc.Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
			t.Fatalf("rollback after %s: %v", oc.c, err)
		}
		// Forget prepared statements, cursors, settings and listeners.
		if _, err := pc.Exec(ctx, "DISCARD ALL").ReadAll(); err != nil {
			t.Fatalf("discard after %s: %v", oc.c, err)
		}
	}
	tally.log(t, "postgres", len(cases))
	if tally.ran < len(cases)/2 {
		t.Errorf("only %d of %d messages ran without error: the oracle's schema misses what the corpus names", tally.ran, len(cases))
	}
}

func testOracleMariaDB(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{InitSQL: testenv.SampleSchemaMySQL + oracleSchemaMySQL})
	version := m.QueryString(t, "select version()")
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = m.User, m.Password, "tcp", m.Addr(), m.Database
	c.MultiStatements = true
	c.TLSConfig = "preferred"
	c.Timeout = 10 * time.Second
	connector, err := mysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	// A fresh connection per message: user variables, prepared statements,
	// handlers and settings do not carry over.
	db.SetMaxIdleConns(0)

	var cases []oracleCase
	rd := testGrant(AccessRead)
	skipped := 0
	for _, cc := range readCorpus(t, "mysql.tsv") {
		if strings.Contains(cc.grant, "+") {
			// Cases with their own sql_mode, database or server are about
			// those; the oracle runs on this server as it is.
			skipped++
			continue
		}
		o := myOpts()
		o.ServerVersion = "5.5.5-" + version
		v := NewMySQLSession(o).MySQL(rd, cc.sql)
		if v.Allow && len(v.Statements) > 0 {
			cases = append(cases, oracleCase{cc, v})
		}
	}
	if len(cases) < 100 {
		t.Fatalf("only %d mysql corpus messages allowed under read", len(cases))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tally := oracleTally{errs: map[string]int{}}
	for _, oc := range cases {
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{"SET SESSION max_statement_time = 5", "SET SESSION TRANSACTION READ ONLY", "START TRANSACTION READ ONLY"} {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		_, runErr := conn.ExecContext(ctx, oc.c.sql)
		var myErr *mysql.MySQLError
		switch {
		case runErr == nil:
			tally.ran++
		case errors.As(runErr, &myErr) && myErr.Number == 1792:
			tally.disagreements = append(tally.disagreements, fmt.Sprintf("%s %q: %s", oc.c, oc.c.sql, myErr.Message))
		case errors.As(runErr, &myErr):
			tally.failed++
			tally.errs[fmt.Sprint(myErr.Number)]++
			t.Logf("%s %q: %d %s", oc.c, oc.c.sql, myErr.Number, myErr.Message)
		default:
			t.Fatalf("%s %q: %v", oc.c, oc.c.sql, runErr)
		}
		_, _ = conn.ExecContext(ctx, "ROLLBACK")
		conn.Close()
	}
	t.Logf("mariadb %s; %d corpus cases with their own options not run", version, skipped)
	tally.log(t, "mariadb", len(cases))
	if tally.ran < len(cases)/2 {
		t.Errorf("only %d of %d messages ran without error: the oracle's schema misses what the corpus names", tally.ran, len(cases))
	}
}
