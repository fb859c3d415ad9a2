package mysql

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"

	"github.com/airlockhq/airlock/authz/internal/authztest"
)

// TestMySQLCompoundOracle runs every corpus statement that airlock reads
// with its compound reader (routines, triggers, events, compound
// statements) on a real MariaDB: the ones airlock reads must be MySQL
// the server reads too (no syntax error), and the ones it refuses as
// syntax errors must be refused by the server as such. Other errors (an
// object that exists already, a missing library) are fine.
func TestMySQLCompoundOracle(t *testing.T) {
	db, version := startMariaDBOracle(t)
	db.SetMaxIdleConns(0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	read, refused := 0, 0
	for _, cc := range authztest.ReadCorpus(t, "mysql.tsv") {
		if !myCompoundLead(cc.SQL) || strings.Contains(cc.Grant, "+mode") {
			continue
		}
		o := myOpts()
		o.ServerVersion = "5.5.5-" + version
		set := readMySQLOptions(&o)
		_, lerr, perr := classifyMySQL(cc.SQL, &set, myCallEnv{})
		var pe *myParseError
		syntax := lerr == nil && errors.As(perr, &pe) && pe.pos >= 0
		if perr != nil && !syntax {
			continue // valid MySQL airlock does not read (FOR loops, ...)
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, runErr := conn.ExecContext(ctx, cc.SQL)
		conn.Close()
		var me *mysqldriver.MySQLError
		isSyntax := errors.As(runErr, &me) && me.Number == 1064
		switch {
		case syntax && !isSyntax:
			t.Errorf("%s %q: airlock finds a syntax error, the server said %v", cc, cc.SQL, runErr)
		case !syntax && isSyntax:
			t.Errorf("%s %q: airlock reads it, the server finds a syntax error: %s", cc, cc.SQL, me.Message)
		case syntax:
			refused++
		default:
			read++
			if runErr != nil {
				t.Logf("%s %q: %v", cc, cc.SQL, runErr)
			}
		}
	}
	if read < 40 || refused < 2 {
		t.Errorf("only %d compound statements read and %d refused as syntax errors", read, refused)
	}
	t.Logf("%d compound statements read by both, %d syntax errors for both", read, refused)
}
