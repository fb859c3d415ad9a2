package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
	"github.com/airlockhq/airlock/testenv"
)

// The differential oracle: see authztest.OracleTally.

// oracleSchemaMySQL is what the MySQL corpus's reads name, beyond the
// sample schema.
const oracleSchemaMySQL = `
CREATE DATABASE IF NOT EXISTS reporting;
CREATE TABLE reporting.daily (id INT PRIMARY KEY, day DATE, total DECIMAL(10, 2));
CREATE TABLE reporting.t (id INT);
`

// oracleCase is a corpus statement the authorizer allowed under read.
type oracleCase struct {
	c authztest.Case
	v authz.Verdict
}

func TestOracle(t *testing.T) {
	t.Run("mariadb", testOracleMariaDB)
}

func testOracleMariaDB(t *testing.T) {
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{InitSQL: testenv.SampleSchemaMySQL + oracleSchemaMySQL})
	version := m.QueryString(t, "select version()")
	c := mysqldriver.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = m.User, m.Password, "tcp", m.Addr(), m.Database
	c.MultiStatements = true
	c.TLSConfig = "preferred"
	c.Timeout = 10 * time.Second
	connector, err := mysqldriver.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	// A fresh connection per message: user variables, prepared statements,
	// handlers and settings do not carry over.
	db.SetMaxIdleConns(0)

	var cases []oracleCase
	rd := authztest.NewGrant(authz.AccessRead)
	skipped := 0
	for _, cc := range authztest.ReadCorpus(t, "mysql.tsv") {
		if strings.Contains(cc.Grant, "+") {
			// Cases with their own sql_mode, database or server are about
			// those; the oracle runs on this server as it is.
			skipped++
			continue
		}
		o := myOpts()
		o.ServerVersion = "5.5.5-" + version
		v := NewSession(o).Query(rd, cc.SQL)
		if v.Allow && len(v.Statements) > 0 {
			cases = append(cases, oracleCase{cc, v})
		}
	}
	if len(cases) < 100 {
		t.Fatalf("only %d mysql corpus messages allowed under read", len(cases))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tally := authztest.OracleTally{Errs: map[string]int{}}
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
		_, runErr := conn.ExecContext(ctx, oc.c.SQL)
		var myErr *mysqldriver.MySQLError
		switch {
		case runErr == nil:
			tally.Ran++
		case errors.As(runErr, &myErr) && myErr.Number == 1792:
			tally.Disagreements = append(tally.Disagreements, fmt.Sprintf("%s %q: %s", oc.c, oc.c.SQL, myErr.Message))
		case errors.As(runErr, &myErr):
			tally.Failed++
			tally.Errs[fmt.Sprint(myErr.Number)]++
			t.Logf("%s %q: %d %s", oc.c, oc.c.SQL, myErr.Number, myErr.Message)
		default:
			t.Fatalf("%s %q: %v", oc.c, oc.c.SQL, runErr)
		}
		_, _ = conn.ExecContext(ctx, "ROLLBACK")
		conn.Close()
	}
	t.Logf("mariadb %s; %d corpus cases with their own options not run", version, skipped)
	tally.Log(t, "mariadb", len(cases))
	if tally.Ran < len(cases)/2 {
		t.Errorf("only %d of %d messages ran without error: the oracle's schema misses what the corpus names", tally.Ran, len(cases))
	}
}
