package authz

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
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
	for _, cc := range readCorpus(t, "mysql.tsv") {
		if !myCompoundLead(cc.sql) || strings.Contains(cc.grant, "+mode") {
			continue
		}
		o := myOpts()
		o.ServerVersion = "5.5.5-" + version
		set := readMySQLOptions(&o)
		_, lerr, perr := classifyMySQL(cc.sql, &set, myCallEnv{})
		var pe *myParseError
		syntax := lerr == nil && errors.As(perr, &pe) && pe.pos >= 0
		if perr != nil && !syntax {
			continue // valid MySQL airlock does not read (FOR loops, ...)
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, runErr := conn.ExecContext(ctx, cc.sql)
		conn.Close()
		var me *mysql.MySQLError
		isSyntax := errors.As(runErr, &me) && me.Number == 1064
		switch {
		case syntax && !isSyntax:
			t.Errorf("%s %q: airlock finds a syntax error, the server said %v", cc, cc.sql, runErr)
		case !syntax && isSyntax:
			t.Errorf("%s %q: airlock reads it, the server finds a syntax error: %s", cc, cc.sql, me.Message)
		case syntax:
			refused++
		default:
			read++
			if runErr != nil {
				t.Logf("%s %q: %v", cc, cc.sql, runErr)
			}
		}
	}
	if read < 40 || refused < 2 {
		t.Errorf("only %d compound statements read and %d refused as syntax errors", read, refused)
	}
	t.Logf("%d compound statements read by both, %d syntax errors for both", read, refused)
}
