package e2e

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// mysqlCLI runs Debian's mysql client (MariaDB's) against the gateway as
// user with password on database db, feeding script on stdin. It returns
// everything the client printed and its error.
func (g *gateway) mysqlCLI(user, password, db, script string, extra ...string) (string, error) {
	g.t.Helper()
	bin := testenv.RequireBinary(g.t, "mariadb", "mariadb-client")
	host, port, _ := strings.Cut(g.MySQLAddr, ":")
	args := append([]string{"--no-defaults", "-h", host, "-P", port, "-u", user, "--password=" + password,
		"--ssl", "--connect-timeout=10", db}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mysqlDB opens a go-sql-driver/mysql pool to the gateway with the token,
// over TLS, with server-side prepared statements (no interpolation).
func (g *gateway) mysqlDB(user, token string, tweak ...func(*mysql.Config)) *sql.DB {
	g.t.Helper()
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, token, "tcp", g.MySQLAddr, "shop-mysql"
	c.TLSConfig = "skip-verify"
	c.Timeout = 10 * time.Second
	c.InterpolateParams = false
	c.ParseTime = true
	for _, f := range tweak {
		f(c)
	}
	conn, err := mysql.NewConnector(c)
	if err != nil {
		g.t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	g.t.Cleanup(func() { db.Close() })
	return db
}

// grantMySQL creates a pre-approved grant on shop-mysql and returns it
// with its token.
func (g *gateway) grantMySQL(agent, task, access string, extra ...string) control.Issued {
	g.t.Helper()
	var iss control.Issued
	args := append([]string{"grants", "create", "--agent", agent, "--resource", "shop-mysql", "--task", task, "--access", access}, extra...)
	g.CLIJSON(&iss, "alice", args...)
	if iss.Grant.State != "active" {
		g.t.Fatalf("grant: %+v", iss.Grant)
	}
	return iss
}

// sessionEvents returns the events of the sessions of grant, oldest
// session first.
func (g *gateway) sessionEvents(grant string) [][]recorder.Event {
	g.t.Helper()
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list")
	var out [][]recorder.Event
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].Grant != grant {
			continue
		}
		var d control.SessionDetail
		g.CLIJSON(&d, "rita", "sessions", "show", list[i].Session)
		out = append(out, d.Events)
	}
	return out
}

// TestMySQLCLI: the mysql command-line client through airlock: queries,
// \G, source of a script, a refused statement and recovery, and the record.
func TestMySQLCLI(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-51: look at failed orders", "read")

	out, err := g.mysqlCLI("agent-1", iss.Token, "shop-mysql", "select count(*) from orders;\n", "-N", "-B")
	if err != nil || strings.TrimSpace(out) != "200" {
		t.Fatalf("count through airlock: err=%v, printed %q", err, out)
	}

	out, err = g.mysqlCLI("agent-1", iss.Token, "shop-mysql", "select id, status from orders where id = 3\\G\n")
	if err != nil || !strings.Contains(out, "*************************** 1. row") || !strings.Contains(out, "status: shipped") {
		t.Fatalf("\\G: err=%v\n%s", err, out)
	}

	script := `select 'first' as marker;
delete from orders;
select 'still usable' as marker;
select count(*) as n from orders where status = 'failed';
`
	path := t.TempDir() + "/script.sql"
	writeFile(t, path, script)
	out, err = g.mysqlCLI("agent-1", iss.Token, "shop-mysql", "source "+path+"\n", "-N", "-B", "--force")
	if err != nil {
		t.Fatalf("source with --force: %v\n%s", err, out)
	}
	for _, want := range []string{"first", "still usable", "25", "ERROR 1142 (42000)", "airlock: DELETE requires write access", "--access write"} {
		if !strings.Contains(out, want) {
			t.Errorf("script output lacks %q:\n%s", want, out)
		}
	}
	if got := g.my.QueryInt(t, "select count(*) from orders"); got != 200 {
		t.Fatalf("upstream has %d orders after a refused delete, want 200", got)
	}

	sessions := g.sessionEvents(iss.Grant.ID)
	if len(sessions) != 3 {
		t.Fatalf("%d sessions recorded, want 3", len(sessions))
	}
	evs := sessions[2]
	var decisions []string
	results := map[uint64]*recorder.Result{}
	for _, e := range evs {
		if e.Protocol != "mysql" || e.Agent != "agent-1" || e.Grant != iss.Grant.ID || e.Approver != "alice" {
			t.Errorf("event %d lacks who and why: %+v", e.Seq, e.Meta)
		}
		for _, r := range e.Outcomes() {
			results[r.ID] = r
		}
	}
	for _, e := range evs {
		if st := e.Statement; st != nil && strings.Contains(st.Text, "orders") {
			decisions = append(decisions, st.Decision+":"+st.Class.Kind)
			r := results[st.ID]
			switch st.Decision {
			case "allow":
				if r == nil || !r.Executed || r.Rows == nil || *r.Rows != 1 {
					t.Errorf("allowed %q: result %+v", st.Text, r)
				}
			case "deny":
				if r != nil || !strings.Contains(st.Reason, "requires write access") {
					t.Errorf("denied %q: reason %q, result %+v", st.Text, st.Reason, r)
				}
			}
		}
	}
	if got, want := strings.Join(decisions, " "), "deny:DELETE allow:SELECT"; got != want {
		t.Errorf("decisions on orders: got %s, want %s", got, want)
	}
	if evs[0].Type != recorder.TypeSessionStart || evs[len(evs)-1].Type != recorder.TypeSessionEnd {
		t.Errorf("session runs from %s to %s", evs[0].Type, evs[len(evs)-1].Type)
	}
}

// TestMySQLLoginRefusals: no TLS, a bad token, another agent's token, an
// unknown resource; each refused with a message and recorded.
func TestMySQLLoginRefusals(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-52: logins", "read")
	cases := []struct {
		name, user, password, db, want string
		extra                          []string
	}{
		{"plaintext", "agent-1", iss.Token, "shop-mysql", "ERROR 3159 (HY000): airlock requires TLS", []string{"--skip-ssl"}},
		{"bad token", "agent-1", "alk_notarealtoken", "shop-mysql", "ERROR 1045 (28000): airlock: authentication failed for agent-1: the password is not the token of any of your grants", nil},
		{"other agent", "agent-2", iss.Token, "shop-mysql", "ERROR 1045 (28000): airlock: authentication failed for agent-2", nil},
		{"unknown agent", "mallory", iss.Token, "shop-mysql", "ERROR 1045 (28000): airlock: authentication failed: \"mallory\" is not an agent known", nil},
		{"unknown resource", "agent-1", iss.Token, "other-db", "ERROR 1049 (42000): airlock: authentication failed: no resource", nil},
		{"no password", "agent-1", "", "shop-mysql", "ERROR 1045 (28000): airlock: authentication failed for agent-1: no password given; the password is your grant token", nil},
		{"no database, bad token", "agent-1", "alk_notarealtoken", "", "ERROR 1046 (3D000): airlock: no database: name the resource as the database", nil},
	}
	for _, c := range cases {
		out, err := g.mysqlCLI(c.user, c.password, c.db, "select 1;\n", c.extra...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: err=%v, want %q in:\n%s", c.name, err, c.want, out)
		}
	}
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list")
	failed := 0
	for _, s := range list {
		if s.Status == "auth.failed" && s.Protocol == "mysql" {
			failed++
		}
	}
	if failed < len(cases) {
		t.Errorf("%d auth.failed sessions recorded for mysql, want %d: %+v", failed, len(cases), list)
	}
}

// TestMySQLGoDriver: go-sql-driver/mysql with server-side prepared
// statements: text and binary protocol, transactions, a refusal inside a
// transaction, a 100k-row result, and parameters in the record.
func TestMySQLGoDriver(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-53: fix a customer", "write")
	db := g.mysqlDB("agent-1", iss.Token)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var n int
	if err := db.QueryRowContext(ctx, "select count(*) from orders where status = ?", "failed").Scan(&n); err != nil || n != 25 {
		t.Fatalf("prepared count: %d, %v", n, err)
	}
	var version string
	if err := db.QueryRowContext(ctx, "select version()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if want := g.my.QueryString(t, "select version()"); version != want {
		t.Errorf("version through airlock %q, want %q", version, want)
	}

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "insert into customers (name, email) values (?, ?)", "Ada Tx", "ada.tx@example.com"); err != nil {
		t.Fatalf("insert in tx: %v", err)
	}
	_, err = tx.ExecContext(ctx, "drop table orders")
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1142 || string(me.SQLState[:]) != "42000" || !strings.Contains(me.Message, "requires ddl access") {
		t.Fatalf("drop in tx: got %v, want error 1142 with the reason", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatalf("rollback after a refusal: %v", err)
	}
	if got := g.my.QueryInt(t, "select count(*) from customers where email = 'ada.tx@example.com'"); got != 0 {
		t.Fatalf("rolled-back insert is upstream")
	}
	tx, err = db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "update customers set name = ? where id = ?", "Ada Committed", 1); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := g.my.QueryString(t, "select name from customers where id = 1"); got != "Ada Committed" {
		t.Fatalf("committed update: name is %q", got)
	}

	// 100k rows, text protocol and binary protocol.
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"select seq, concat('row-', seq) from seq_1_to_100000", nil},
		{"select seq, concat('row-', seq) from seq_1_to_100000 where seq > ?", []any{0}},
	} {
		rows, err := db.QueryContext(ctx, q.sql, q.args...)
		if err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
		count, sum := 0, 0
		for rows.Next() {
			var i int
			var s string
			if err := rows.Scan(&i, &s); err != nil {
				t.Fatal(err)
			}
			count++
			sum += i
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		if count != 100000 || sum != 100000*100001/2 {
			t.Fatalf("%s: %d rows summing to %d", q.sql, count, sum)
		}
	}
	db.Close()

	var found bool
	for _, evs := range g.sessionEvents(iss.Grant.ID) {
		for _, e := range evs {
			if st := e.Statement; st != nil && strings.HasPrefix(st.Text, "update customers") {
				found = true
				if len(st.Params) != 2 || st.Params[0].Value != "Ada Committed" || st.Params[1].Value != "1" {
					t.Errorf("update recorded with params %+v", st.Params)
				}
			}
		}
	}
	if !found {
		t.Errorf("the prepared update is not in the record")
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
