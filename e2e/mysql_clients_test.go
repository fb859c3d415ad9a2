package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// The MySQL client matrix: each client runs the same script through the
// real gateway against real MariaDB, under a write grant:
//
//	count         select count(*) from orders                        200
//	param         ... where status = ? ('failed')                     25
//	insert        insert into customers values (?, ?) (TAG, TAG@...)  1 row
//	update        update customers set name = concat(...) ...        1 row
//	tx_insert     begin; insert (TAG-rb@...); rollback               1 row, then gone
//	server_error  select * from no_such_table                        1146
//	unique        the insert again                                   1062
//	recovered     select count(*) from customers where email = ?     1
//	refused       drop table orders (needs ddl)                      1142
//	after         select 'after refusal'                             after refusal
//
// Each test then checks what the upstream holds and the events recorded
// for the grant's sessions (checkMySQLClientEvents).
var mysqlScriptWant = []struct{ step, want string }{
	{"count", "200"},
	{"param", "25"},
	{"insert", "1"},
	{"update", "1"},
	{"tx_insert", "1"},
	{"rollback", "ok"},
	{"server_error", "ERROR 1146"},
	{"unique", "ERROR 1062"},
	{"recovered", "1"},
	{"refused", "ERROR 1142"},
	{"after", "after refusal"},
}

func checkMySQLScriptOutput(t *testing.T, g *gateway, got map[string]string) {
	t.Helper()
	for _, s := range mysqlScriptWant {
		v, ok := got[s.step]
		switch {
		case !ok:
			t.Errorf("step %s: no output", s.step)
		case strings.HasPrefix(s.want, "ERROR "):
			if !strings.HasPrefix(v, s.want) {
				t.Errorf("step %s: got %q, want an error starting %q", s.step, v, s.want)
			}
		case v != s.want:
			t.Errorf("step %s: got %q, want %q", s.step, v, s.want)
		}
	}
	if r := got["refused"]; !strings.Contains(r, "airlock: DROP TABLE requires ddl access") {
		t.Errorf("refusal does not carry the reason: %q", r)
	}
	// The client sees the upstream's own version, not one of airlock's.
	if want := g.my.QueryString(t, "select version()"); !strings.Contains(want, got["version"]) && !strings.Contains(got["version"], want) {
		t.Errorf("the client saw server version %q, the upstream is %q", got["version"], want)
	}
}

func checkMySQLScriptUpstream(t *testing.T, g *gateway, tag string) {
	t.Helper()
	if n := g.my.QueryInt(t, fmt.Sprintf("select count(*) from customers where email = '%s@example.com' and name = '%s (updated)'", tag, tag)); n != 1 {
		t.Errorf("upstream: %d updated rows for %s, want 1", n, tag)
	}
	if n := g.my.QueryInt(t, fmt.Sprintf("select count(*) from customers where email = '%s-rb@example.com'", tag)); n != 0 {
		t.Errorf("upstream: the rolled-back insert of %s is there", tag)
	}
	if n := g.my.QueryInt(t, "select count(*) from orders"); n != 200 {
		t.Errorf("upstream: %d orders after a refused DROP, want 200", n)
	}
}

// mysqlGrantSessions waits until every session of the grant has ended and
// returns their events, oldest first.
func mysqlGrantSessions(t *testing.T, g *gateway, grant string, min int) [][]recorder.Event {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var list []recorder.Summary
		g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
		open, n := 0, 0
		for _, s := range list {
			if s.Grant == grant {
				n++
				if s.Status != recorder.StatusEnded {
					open++
				}
			}
		}
		if n >= min && open == 0 {
			return g.sessionEvents(grant)
		}
		if time.Now().After(deadline) {
			t.Fatalf("grant %s: %d sessions, %d not ended after 15s", grant, n, open)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkMySQLClientEvents checks the recorded events of the script. bound
// says the client sends parameters with COM_STMT_EXECUTE, so they are
// recorded with the statement; otherwise the values are in the text.
func checkMySQLClientEvents(t *testing.T, sessions [][]recorder.Event, grant, tag string, bound bool) {
	t.Helper()
	type stmt struct {
		st  *recorder.Statement
		res *recorder.Result
	}
	var all []stmt
	for _, evs := range sessions {
		if len(evs) < 2 || evs[0].Type != recorder.TypeSessionStart || evs[len(evs)-1].Type != recorder.TypeSessionEnd {
			t.Errorf("session does not run from start to end: %d events", len(evs))
		}
		results := map[uint64]*recorder.Result{}
		for i, e := range evs {
			if e.Seq != uint64(i+1) {
				t.Errorf("event %d has seq %d", i, e.Seq)
			}
			if e.Agent != "agent-1" || e.Grant != grant || e.Approver != "alice" || e.Protocol != "mysql" {
				t.Errorf("event %d lacks who and why: %+v", e.Seq, e.Meta)
			}
			for _, r := range e.Outcomes() {
				results[r.ID] = r
			}
		}
		for _, e := range evs {
			if e.Statement != nil {
				all = append(all, stmt{e.Statement, results[e.Statement.ID]})
			}
		}
	}
	find := func(what string, match func(stmt) bool) stmt {
		t.Helper()
		for _, s := range all {
			if match(s) {
				return s
			}
		}
		var texts []string
		for _, s := range all {
			texts = append(texts, fmt.Sprintf("%s %q %+v", s.st.Decision, s.st.Text, s.st.Params))
		}
		t.Errorf("no recorded statement: %s; recorded:\n%s", what, strings.Join(texts, "\n"))
		return stmt{}
	}
	mentions := func(s stmt, v string) bool {
		if bound {
			return slices.ContainsFunc(s.st.Params, func(p recorder.Param) bool { return p.Value == v })
		}
		return strings.Contains(s.st.Text, v)
	}
	executed := func(s stmt, tag string) bool {
		return s.st.Decision == "allow" && s.res != nil && s.res.Executed && s.res.Error == "" && s.res.Tag == tag
	}
	failedWith := func(s stmt, state string) bool {
		return s.st.Decision == "allow" && s.res != nil && s.res.Executed && s.res.SQLState == state
	}
	email := tag + "@example.com"
	find("select count(*) from orders, 1 row", func(s stmt) bool {
		return s.st.Text == "select count(*) from orders" && executed(s, "SELECT 1")
	})
	find("the parameterized select with 'failed'", func(s stmt) bool {
		return strings.Contains(s.st.Text, "from orders where status =") && mentions(s, "failed") && executed(s, "SELECT 1")
	})
	find("the insert", func(s stmt) bool { return s.st.Class.Kind == "INSERT" && mentions(s, email) && executed(s, "OK 1") })
	find("the update", func(s stmt) bool {
		return s.st.Class.Kind == "UPDATE" && mentions(s, email) && s.res != nil && strings.HasPrefix(s.res.Tag, "OK 1")
	})
	find("the insert in the rolled-back transaction", func(s stmt) bool {
		return s.st.Class.Kind == "INSERT" && mentions(s, tag+"-rb@example.com") && executed(s, "OK 1")
	})
	find("the missing table, failed with 42S02", func(s stmt) bool {
		return strings.Contains(s.st.Text, "no_such_table") && failedWith(s, "42S02")
	})
	find("the duplicate insert, failed with 23000", func(s stmt) bool {
		return s.st.Class.Kind == "INSERT" && mentions(s, email) && failedWith(s, "23000")
	})
	drop := find("the refused drop", func(s stmt) bool { return s.st.Text == "drop table orders" })
	if drop.st != nil && (drop.st.Decision != "deny" || !strings.Contains(drop.st.Reason, "requires ddl access") || drop.res != nil) {
		t.Errorf("refused drop recorded as %+v, result %+v", drop.st, drop.res)
	}
	find("the statement after the refusal", func(s stmt) bool {
		return strings.Contains(s.st.Text, "'after refusal'") && executed(s, "SELECT 1")
	})
	for _, s := range all {
		if s.st.Decision == "allow" && s.res == nil {
			t.Errorf("allowed statement %q has no result", s.st.Text)
		}
	}
}

// mysqlClientEnv is the environment of a client program: the connection
// in MYSQL_* variables and the tag for the rows it writes.
func mysqlClientEnv(g *gateway, token, tag string) []string {
	host, port, _ := strings.Cut(g.MySQLAddr, ":")
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "MYSQL_") })
	return append(env, "MYSQL_HOST="+host, "MYSQL_PORT="+port, "MYSQL_USER=agent-1", "MYSQL_PWD="+token,
		"MYSQL_DATABASE=shop-mysql", "CLIENT_TAG="+tag)
}

func mysqlClientsDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("clients", "mysql"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestMySQLClientPyMySQL: PyMySQL (text protocol, parameters interpolated
// by the client) runs the script and a streamed (unbuffered) result.
func TestMySQLClientPyMySQL(t *testing.T) {
	py := testenv.RequireBinary(t, "python3", "python3")
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		py = "/usr/bin/python3" // Debian's, which python3-pymysql installs for
	}
	testenv.RequireFile(t, "/usr/lib/python3/dist-packages/pymysql/__init__.py", "python3-pymysql")
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-70: pymysql", "write")
	const tag = "pymysql"
	got := runClient(t, time.Minute, mysqlClientEnv(g, iss.Token, tag), "", py, filepath.Join(mysqlClientsDir(t), "python", "client_script.py"))
	checkMySQLScriptOutput(t, g, got)
	if got["streamed"] != "12502500" {
		t.Errorf("streamed sum %q, want 12502500", got["streamed"])
	}
	checkMySQLScriptUpstream(t, g, tag)
	checkMySQLClientEvents(t, mysqlGrantSessions(t, g, iss.Grant.ID, 1), iss.Grant.ID, tag, false)
}

// TestMySQLClientMysql2: mysql2 (npm) runs the script with execute, its
// server-side prepared statements, and re-executes one statement.
func TestMySQLClientMysql2(t *testing.T) {
	modules := mysqlNodeModules(t)
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-71: mysql2", "write")
	const tag = "mysql2"
	env := append(mysqlClientEnv(g, iss.Token, tag), "NODE_PATH="+modules)
	got := runClient(t, time.Minute, env, "", "node", filepath.Join(mysqlClientsDir(t), "node", "client_script.js"))
	checkMySQLScriptOutput(t, g, got)
	if !strings.HasPrefix(got["refused_prepare"], "ERROR 1142") || got["prepared_again"] != "75,75,25" {
		t.Errorf("refused prepare %q, prepared again %q", got["refused_prepare"], got["prepared_again"])
	}
	checkMySQLScriptUpstream(t, g, tag)
	sessions := mysqlGrantSessions(t, g, iss.Grant.ID, 1)
	checkMySQLClientEvents(t, sessions, iss.Grant.ID, tag, true)
	var values []string
	for _, evs := range sessions {
		for _, e := range evs {
			if st := e.Statement; st != nil && strings.Contains(st.Text, "as n from orders where status = ?") && len(st.Params) == 1 {
				values = append(values, st.Params[0].Value)
			}
		}
	}
	if strings.Join(values, ",") != "paid,shipped,new" {
		t.Errorf("executions of the prepared statement recorded with %v", values)
	}
}

// TestMySQLClientConnectorJ: MariaDB Connector/J with server-side
// prepared statements runs the script.
func TestMySQLClientConnectorJ(t *testing.T) {
	java := testenv.RequireBinary(t, "java", "default-jre-headless")
	jar := testenv.RequireFile(t, "/usr/share/java/mariadb-java-client.jar", "libmariadb-java")
	g := startGateway(t, gatewayOptions{MySQL: true})
	iss := g.grantMySQL("agent-1", "INC-72: jdbc", "write")
	const tag = "connectorj"
	got := runClient(t, 2*time.Minute, mysqlClientEnv(g, iss.Token, tag), "", java, "-cp", jar,
		filepath.Join(mysqlClientsDir(t), "java", "MySQLClientScript.java"))
	checkMySQLScriptOutput(t, g, got)
	checkMySQLScriptUpstream(t, g, tag)
	checkMySQLClientEvents(t, mysqlGrantSessions(t, g, iss.Grant.ID, 1), iss.Grant.ID, tag, true)
}

// mysqlNodeModules installs the mysql2 client's locked dependencies.
func mysqlNodeModules(t *testing.T) string {
	return npmModules(t, filepath.Join(mysqlClientsDir(t), "node"), "mysql2")
}
