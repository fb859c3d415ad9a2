package e2e

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/airlockhq/airlock/testenv"
)

// airlockSyntaxNote is what airlock adds to the server's syntax error.
const airlockSyntaxNote = " (airlock could not parse it, so nothing in this message was sent to the server)"

// mysqlDirect runs the mysql client straight against the gateway's
// MariaDB, as the resource's own user, and returns what it printed on
// stderr.
func (g *gateway) mysqlDirect(script string, extra ...string) (string, error) {
	g.t.Helper()
	return g.mysqlClientStderr(script, append([]string{"-h", g.my.Host, "-P", strconv.Itoa(g.my.Port), "-u", g.my.User,
		"--password=" + g.my.Password, g.my.Database}, extra...))
}

// mysqlStderr runs the mysql client through the gateway and returns what
// it printed on stderr.
func (g *gateway) mysqlStderr(user, token, script string, extra ...string) (string, error) {
	g.t.Helper()
	host, port, _ := strings.Cut(g.MySQLAddr, ":")
	return g.mysqlClientStderr(script, append([]string{"-h", host, "-P", port, "-u", user, "--password=" + token,
		"--ssl", "shop-mysql"}, extra...))
}

func (g *gateway) mysqlClientStderr(script string, args []string) (string, error) {
	g.t.Helper()
	bin := testenv.RequireBinary(g.t, "mariadb", "mariadb-client")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--no-defaults", "--connect-timeout=10"}, args...)...)
	cmd.Stdin = strings.NewReader(script)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

// TestMySQLSyntaxErrorFidelity: a statement airlock cannot parse is
// refused, recorded and never forwarded, and the client gets what
// MariaDB itself says (ERROR 1064 (42000) with the server's near '...'
// and line), plus airlock's note: the mysql client's stderr through
// airlock and direct, and go-sql-driver's error number and SQLSTATE for
// COM_QUERY and COM_STMT_PREPARE.
func TestMySQLSyntaxErrorFidelity(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-70: typos", "write")

	for _, script := range []string{
		"SELEC 1;\n",
		"select * form orders;\n",
		"select id from orders\n where status =\n order by id;\n",
		"select 'unterminated;\n",
		"delimiter //\nselect id from orders where id = 1; selec 2//\n",
		"select id, \"a\nb\" from orders where status in ('paid',, 'x');\n",
		"update orders set status = 'x' wher id = 1;\n",
	} {
		direct, derr := g.mysqlDirect(script)
		through, terr := g.mysqlStderr("agent-1", iss.Token, script)
		if derr == nil || terr == nil {
			t.Errorf("%q: the client succeeded (direct %v, through airlock %v)", script, derr, terr)
			continue
		}
		// The client echoes the failed text before the error; compare
		// the error line.
		direct, through = errorLine(direct), errorLine(through)
		if !strings.HasPrefix(direct, "ERROR 1064 (42000) at line ") || through != direct+airlockSyntaxNote {
			t.Errorf("%q:\ndirect:  %s\nairlock: %s", script, direct, through)
		}
	}
	if n := g.my.QueryInt(t, "select count(*) from orders where status = 'x'"); n != 0 {
		t.Fatalf("a refused message ran: %d orders with status x", n)
	}

	// go-sql-driver: the error's number, SQLSTATE and message, for a
	// query and for a server-side prepare.
	direct := directMySQLDB(t, g)
	through := g.mysqlDB("agent-1", iss.Token)
	ctx := context.Background()
	for _, q := range []string{"selec id from orders", "select id from orders where id = ? and"} {
		for _, prepare := range []bool{false, true} {
			run := func(db *sql.DB) error {
				if prepare {
					st, err := db.PrepareContext(ctx, q)
					if err == nil {
						st.Close()
					}
					return err
				}
				_, err := db.ExecContext(ctx, q)
				return err
			}
			var dm, am *mysql.MySQLError
			derr, aerr := run(direct), run(through)
			if !errors.As(derr, &dm) || !errors.As(aerr, &am) {
				t.Errorf("%q (prepare %v): direct %v, through airlock %v", q, prepare, derr, aerr)
				continue
			}
			if am.Number != 1064 || am.SQLState != [5]byte{'4', '2', '0', '0', '0'} || am.Number != dm.Number ||
				am.SQLState != dm.SQLState || am.Message != dm.Message+airlockSyntaxNote {
				t.Errorf("%q (prepare %v):\ndirect:  %d %s %q\nairlock: %d %s %q", q, prepare,
					dm.Number, dm.SQLState[:], dm.Message, am.Number, am.SQLState[:], am.Message)
			}
		}
	}

	// Each refusal is in the record with its rule and reason.
	refused := 0
	for _, evs := range g.sessionEvents(iss.Grant.ID) {
		for _, e := range evs {
			if st := e.Statement; st != nil && st.Decision == "deny" {
				if st.Rule != "unparseable" || !strings.Contains(st.Reason, "could not parse") {
					t.Errorf("refusal recorded as %s: %s", st.Rule, st.Reason)
				}
				refused++
			}
		}
	}
	if refused < 11 {
		t.Errorf("%d refusals recorded, want 11", refused)
	}
}

// errorLine is the mysql client's "ERROR ..." line in its stderr.
func errorLine(stderr string) string {
	if i := strings.LastIndex(stderr, "\nERROR "); i >= 0 {
		return strings.TrimRight(stderr[i+1:], "\n")
	}
	return strings.TrimRight(stderr, "\n")
}

// directMySQLDB is a go-sql-driver pool straight to the gateway's MariaDB.
func directMySQLDB(t *testing.T, g *gateway) *sql.DB {
	t.Helper()
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = g.my.User, g.my.Password, "tcp", g.my.Addr(), g.my.Database
	c.Timeout = 10 * time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	return db
}

// TestMySQLNulInLiteral: a string literal holding a raw NUL byte is legal
// MySQL. go-sql-driver with interpolateParams on a NO_BACKSLASH_ESCAPES
// session (it learns the mode from the handshake's status flags) sends
// one; the value must arrive and come back byte for byte.
func TestMySQLNulInLiteral(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	g.my.Exec(t, "create table blobs (id int primary key, b varbinary(64), s varchar(64))")
	g.my.Exec(t, "set global sql_mode = concat(@@global.sql_mode, ',NO_BACKSLASH_ESCAPES')")
	iss := g.grantMySQL("agent-1", "INC-71: binary values", "write")
	db := g.mysqlDB("agent-1", iss.Token, func(c *mysql.Config) { c.InterpolateParams = true })
	ctx := context.Background()
	want := []byte("a\x00b\\'\"\x00\xff\x00")
	text := "x\x00y\\z'"
	if _, err := db.ExecContext(ctx, "insert into blobs (id, b, s) values (?, ?, ?)", 1, want, text); err != nil {
		t.Fatalf("insert with NUL bytes: %v", err)
	}
	var got []byte
	var gotText string
	if err := db.QueryRowContext(ctx, "select b, s from blobs where id = ? and s = ?", 1, text).Scan(&got, &gotText); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if string(got) != string(want) || gotText != text {
		t.Fatalf("read back %q, %q; want %q, %q", got, gotText, want, text)
	}
	if up := g.my.QueryString(t, "select hex(b) from blobs where id = 1"); up != strings.ToUpper(hex.EncodeToString(want)) {
		t.Fatalf("upstream holds %s, want %s", up, strings.ToUpper(hex.EncodeToString(want)))
	}
	// A NUL outside a literal stays refused: the server would read it
	// as the end of the statement.
	if _, err := db.ExecContext(ctx, "select 1 /* \x00 */; delete from blobs"); err == nil || !strings.Contains(err.Error(), "NUL byte outside a string literal") {
		t.Fatalf("NUL in a comment: %v", err)
	}
}
