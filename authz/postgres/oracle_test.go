package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
	"github.com/airlockhq/airlock/testenv"
)

// The differential oracle: see authztest.OracleTally.

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

// oracleCase is a corpus statement the authorizer allowed under read.
type oracleCase struct {
	c authztest.Case
	v authz.Verdict
}

func TestOracle(t *testing.T) {
	t.Run("postgres", testOraclePostgres)
}

func testOraclePostgres(t *testing.T) {
	var cases []oracleCase
	rd := authztest.NewGrant(authz.AccessRead)
	for _, c := range authztest.ReadCorpus(t, "postgres.tsv") {
		v := NewSession(Options{}).Query(rd, c.SQL)
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
	tally := authztest.OracleTally{Errs: map[string]int{}}
	for _, oc := range cases {
		if _, err := pc.Exec(ctx, "BEGIN READ ONLY").ReadAll(); err != nil {
			t.Fatalf("begin: %v", err)
		}
		var runErr error
		if strings.HasPrefix(strings.ToLower(oc.v.Statements[0].Text), "copy") && len(oc.v.Statements) == 1 {
			_, runErr = pc.CopyTo(ctx, io.Discard, oc.c.SQL)
		} else {
			_, runErr = pc.Exec(ctx, oc.c.SQL).ReadAll()
		}
		var pgErr *pgconn.PgError
		switch {
		case runErr == nil:
			tally.Ran++
		case errors.As(runErr, &pgErr) && pgErr.Code == "25006":
			tally.Disagreements = append(tally.Disagreements, fmt.Sprintf("%s %q: %s", oc.c, oc.c.SQL, pgErr.Message))
		case errors.As(runErr, &pgErr):
			tally.Failed++
			tally.Errs[pgErr.Code]++
			t.Logf("%s %q: %s %s", oc.c, oc.c.SQL, pgErr.Code, pgErr.Message)
		default:
			t.Fatalf("%s %q: %v", oc.c, oc.c.SQL, runErr)
		}
		if _, err := pc.Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
			t.Fatalf("rollback after %s: %v", oc.c, err)
		}
		// Forget prepared statements, cursors, settings and listeners.
		if _, err := pc.Exec(ctx, "DISCARD ALL").ReadAll(); err != nil {
			t.Fatalf("discard after %s: %v", oc.c, err)
		}
	}
	tally.Log(t, "postgres", len(cases))
	if tally.Ran < len(cases)/2 {
		t.Errorf("only %d of %d messages ran without error: the oracle's schema misses what the corpus names", tally.Ran, len(cases))
	}
}
