package mysql

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	mysqldriver "github.com/go-sql-driver/mysql"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/authz/internal/authztest"
	"github.com/airlockhq/airlock/testenv"
)

// mySyntaxCases are messages the server refuses with a syntax error. The
// oracle below checks airlock's wording of each against a real MariaDB;
// the expected near text and line here are what MariaDB 10.11 said.
var mySyntaxCases = []struct {
	sql, near string
	line      int
}{
	{"SELEC 1", "SELEC 1", 1},
	{"SELECT * FORM t", "FORM t", 1},
	{"select 1 from", "", 1},
	{"select (1", "", 1},
	{"  \n selec 1", "selec 1", 1},
	{"select 1 from t where a = \n and b", "and b", 2},
	{"select 1 from\n; select 2", "; select 2", 2},
	{"select 1 from ;;; ", "", 1},
	{"select 1;\n\n selec\n 2", "selec\n 2", 1},
	{"select 1 /* c\n */ from t where (", "", 2},
	{"select 1 -- c\n , 2 from  -- c2\n where", "where", 3},
	{"select 1 /*!99999 selec\n */ x y", "y", 2},
	{"select \"a\nb\nc\" from t where ééé éé", "éé", 1},
	{"select 1 from t where a =`abc\ndef` x", "x", 1},
	{"select 1 from t where x = 1 limit 1 , /* comment */ ; select 2", "; select 2", 1},
	{"select 'abc", "'abc", 1},
	{"select \"abc", "\"abc", 1},
	{"select `abc", "`abc", 1},
	{"select 1 /* abc", "/* abc", 1},
	{"select /*! 1", "", 1},
	{"select `a\x00b`", "`a", 1},
	{"select \xff\xfe 1", "?? 1", 1},
	{"select 1 frm t where \U0001F600 x", "t where ? x", 1},
	{"select 1 frm t where " + strings.Repeat("é", 100), "t where " + strings.Repeat("é", 34) + "...", 1},
	{"select 1 frm t where " + strings.Repeat("a", 78) + "éb", "t where " + strings.Repeat("a", 69) + "...", 1},
	{"select 1 frm t where " + strings.Repeat("a", 72), "t where " + strings.Repeat("a", 72), 1},
	{"select 1 frm t where " + strings.Repeat("a", 73), "t where " + strings.Repeat("a", 69) + "...", 1},
	{"delete from orders where id = 1; updat orders set x = 1", "updat orders set x = 1", 1},
	{"select 1,, 2", " 2", 1},
	{"select (1,,2)", "2)", 1},
	{"select 1 from t where a in ('p',, 'x')", " 'x')", 1},
	{"insert into t values (1,)", ")", 1},
	{"select 1 from t limit 1,,", "", 1},
	{"select * from t where id = = 1", "= 1", 1},
	{"select id from orders where id = ? and", "? and", 1},
	{"select '?', `?` /* ? */ from orders where id = 1 and", "", 1},
	{"create procedure p() begin selec 1; end", "1; end", 1},
	{"create procedure p() begin select 1 end", "", 1},
	{"create procedure p() begin if 1 then select 1; end; end", "; end", 1},
	{"create procedure p()\nbegin\n  declare x int;\n  set x = ;\nend", ";\nend", 4},
	{"create procedure p() begin while 1 select 1; end while; end", "select 1; end while; end", 1},
	{"create procedure p() begin declare x int; select x frm t; end", "t; end", 1},
	{"create procedure p() begin if 1 > then select 1; end if; end", "then select 1; end if; end", 1},
	{"create function f() returns int return 1 +", "", 1},
	{"create trigger t before insert on orders for each row set new.x = ", "", 1},
	{"create procedure p() begin declare x int; select 1 into x, from t; end", "from t; end", 1},
	{"create procedure p(a int, b) select 1", ") select 1", 1},
}

const mariaSyntaxPrefix = "You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near '"

func TestMySQLSyntaxError(t *testing.T) {
	o := myOpts()
	o.ServerVersion = "5.5.5-10.11.19-MariaDB-0+deb12u1"
	g := authztest.NewGrant(authz.AccessAdmin)
	for _, tc := range mySyntaxCases {
		v := NewSession(o).Query(g, tc.sql)
		if v.Allow || len(v.Statements) != 1 {
			t.Errorf("%q: %+v", tc.sql, v)
			continue
		}
		d := v.Statements[0]
		want := mariaSyntaxPrefix + tc.near + "' at line " + strconv.Itoa(tc.line)
		if d.Rule != "unparseable" || d.Syntax == nil || d.Syntax.Msg != want {
			t.Errorf("%q: rule %q syntax %+v\nwant %q", tc.sql, d.Rule, d.Syntax, want)
		}
	}
	// MySQL words it for MySQL and cuts near at 80 bytes without "...".
	o.ServerVersion = "8.0.36"
	long := "select 1 frm t where " + strings.Repeat("a", 100)
	v := NewSession(o).Query(g, long)
	want := "You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near 't where " + strings.Repeat("a", 72) + "' at line 1"
	if s := v.Statements[0].Syntax; s == nil || s.Msg != want || s.Pos != 14 {
		t.Errorf("MySQL flavour: %+v\nwant %q at 14", s, want)
	}
	// What the server might read differently is refused, not a syntax
	// error: a NUL outside a string literal.
	for _, q := range []string{"select 1 # x\x00; drop table t", "select 1\x00", "select /* \x00 */ 1"} {
		v := NewSession(o).Query(g, q)
		if d := v.Statements[0]; v.Allow || d.Rule != "lexical" || d.Syntax != nil {
			t.Errorf("%q: %+v", q, d)
		}
	}
}

// startMariaDBOracle starts a MariaDB with the oracle's schema and opens
// a pool to it that runs multi-statement messages; version is the
// server's.
func startMariaDBOracle(t *testing.T) (db *sql.DB, version string) {
	t.Helper()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{InitSQL: testenv.SampleSchemaMySQL + oracleSchemaMySQL})
	c := mysqldriver.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = m.User, m.Password, "tcp", m.Addr(), m.Database
	c.MultiStatements = true
	c.Timeout = 10 * time.Second
	connector, err := mysqldriver.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db = sql.OpenDB(connector)
	t.Cleanup(func() { db.Close() })
	return db, m.QueryString(t, "select version()")
}

// TestMySQLSyntaxOracle sends each case to a real MariaDB and compares its
// error with the one airlock would give in its place.
func TestMySQLSyntaxOracle(t *testing.T) {
	db, version := startMariaDBOracle(t)
	o := myOpts()
	o.ServerVersion = "5.5.5-" + version
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range mySyntaxCases {
		_, err := db.ExecContext(ctx, tc.sql)
		var me *mysqldriver.MySQLError
		if !errors.As(err, &me) || me.Number != 1064 {
			t.Errorf("%q: the server said %v, want a syntax error", tc.sql, err)
			continue
		}
		v := NewSession(o).Query(authztest.NewGrant(authz.AccessAdmin), tc.sql)
		s := v.Statements[0].Syntax
		if s == nil || s.Msg != me.Message {
			t.Errorf("%q:\nserver  %q\nairlock %+v", tc.sql, me.Message, s)
		}
	}
}
