package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// The client matrix: every common Postgres client runs the same script
// through the real gateway against real PostgreSQL, under a write grant:
//
//	count      select count(*) from orders                          200
//	param      ... where status = $1 ('failed')                      25
//	insert     insert into customers values ($1, $2) (TAG, TAG@...)   1 row
//	update     update customers set name = name || ' (updated)' ...  1 row
//	tx_insert  begin; insert (TAG-rb@...); rollback                  1 row, then gone
//	div0       select 1/0                                            22012
//	unique     the insert again                                      23505
//	recovered  select count(*) from customers where email = $1      1
//	refused    drop table orders (needs ddl)                         42501
//	after      select 'after refusal'                                after refusal
//
// Each test then checks what the upstream holds and the events recorded
// for the grant's sessions (checkClientEvents). Client-specific features
// (psql meta-commands and \copy, pgx batches and COPY, server-side cursors,
// JDBC named statements, pgbench's modes) follow in each test.

// scriptWant is what each step of the script prints: a value, or the
// start of an error.
var scriptWant = []struct{ step, want string }{
	{"count", "200"},
	{"param", "25"},
	{"insert", "1"},
	{"update", "1"},
	{"tx_insert", "1"},
	{"rollback", "ok"},
	{"div0", "ERROR 22012"},
	{"unique", "ERROR 23505"},
	{"recovered", "1"},
	{"refused", "ERROR 42501: airlock: DROP TABLE requires ddl access"},
	{"after", "after refusal"},
}

// checkScriptOutput checks the steps a client printed against scriptWant.
func checkScriptOutput(t *testing.T, got map[string]string) {
	t.Helper()
	for _, s := range scriptWant {
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
}

// checkScriptUpstream checks what the script left in the upstream: the
// updated row, no rolled-back row, and the table the refusal protected.
func checkScriptUpstream(t *testing.T, g *gateway, tag string) {
	t.Helper()
	if n := g.pg.QueryInt(t, fmt.Sprintf("select count(*) from customers where email = '%s@example.com' and name = '%s (updated)'", tag, tag)); n != 1 {
		t.Errorf("upstream: %d updated rows for %s, want 1", n, tag)
	}
	if n := g.pg.QueryInt(t, fmt.Sprintf("select count(*) from customers where email = '%s-rb@example.com'", tag)); n != 0 {
		t.Errorf("upstream: the rolled-back insert of %s is there", tag)
	}
	if n := g.pg.QueryInt(t, "select count(*) from orders"); n != 200 {
		t.Errorf("upstream: %d orders after a refused DROP, want 200", n)
	}
}

// stmtResult is a recorded statement and, if any, its result.
type stmtResult struct {
	st  *recorder.Statement
	res *recorder.Result
}

// grantStatements pairs the statement events of sessions with their
// results, in order: the statements the client sent, not the settings it
// asked for when it connected (isStartupSetting).
func grantStatements(sessions [][]recorder.Event) []stmtResult {
	var out []stmtResult
	for _, evs := range sessions {
		results := map[uint64]*recorder.Result{}
		for _, e := range evs {
			for _, r := range e.Outcomes() {
				results[r.ID] = r
			}
		}
		for _, e := range evs {
			if e.Statement != nil && !isStartupSetting(e.Statement) {
				out = append(out, stmtResult{e.Statement, results[e.Statement.ID]})
			}
		}
	}
	return out
}

// grantSessions waits until every session of the grant has ended (the end
// event is written after the client hung up) and returns each one's
// events, oldest session first. It fails unless there are at least atLeast.
func grantSessions(t *testing.T, g *gateway, grant string, atLeast int) [][]recorder.Event {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var list []recorder.Summary
		g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
		var ids []string
		open := 0
		for _, s := range list {
			if s.Grant != grant {
				continue
			}
			ids = append(ids, s.Session)
			if s.Status != recorder.StatusEnded {
				open++
			}
		}
		if len(ids) >= atLeast && open == 0 {
			slices.Reverse(ids) // the list is newest first
			out := make([][]recorder.Event, len(ids))
			for i, id := range ids {
				var d control.SessionDetail
				g.CLIJSON(&d, "rita", "sessions", "show", id)
				out[i] = d.Events
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("grant %s: %d sessions, %d not ended after 15s; want at least %d, all ended", grant, len(ids), open, atLeast)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkSessionsWellFormed checks what every recorded session must be:
// gapless, from start to end, every event naming the agent and grant, and
// the end counting the statements and denials recorded.
func checkSessionsWellFormed(t *testing.T, sessions [][]recorder.Event, grant string) {
	t.Helper()
	for _, evs := range sessions {
		if len(evs) < 2 || evs[0].Type != recorder.TypeSessionStart || evs[len(evs)-1].Type != recorder.TypeSessionEnd {
			t.Errorf("session does not run from start to end: %d events", len(evs))
			continue
		}
		stmts, denied := 0, 0
		for i, e := range evs {
			if e.Seq != uint64(i+1) {
				t.Errorf("session %s: event %d has seq %d", e.Session, i, e.Seq)
			}
			if e.Agent != "agent-1" || e.Grant != grant || e.Approver != "alice" || e.Protocol != "postgres" {
				t.Errorf("session %s: event %d lacks who and why: %+v", e.Session, e.Seq, e.Meta)
			}
			if e.Statement != nil {
				stmts++
				if e.Statement.Decision == "deny" {
					denied++
				}
				// No client here executes a statement it did not Parse
				// through the gateway; a refusal at Parse must not come
				// back as a second, unknown-statement refusal at Execute.
				if e.Statement.Rule == "unknown-statement" {
					t.Errorf("session %s: event %d: %s refused as unknown: %s", e.Session, e.Seq, e.Statement.Text, e.Statement.Reason)
				}
			}
		}
		if end := evs[len(evs)-1].End; end == nil || end.Statements != stmts || end.Denied != denied {
			t.Errorf("session %s: end %+v, but %d statements and %d denials recorded", evs[0].Session, end, stmts, denied)
		}
	}
}

// checkClientEvents checks the recorded events of the script: each step
// recorded with its decision and outcome. bound says the client sends
// parameters bound (extended protocol), so they are recorded with the
// statement; otherwise the values are in the text.
func checkClientEvents(t *testing.T, sessions [][]recorder.Event, grant, tag string, bound bool) {
	t.Helper()
	checkSessionsWellFormed(t, sessions, grant)
	all := grantStatements(sessions)
	find := func(what string, match func(stmtResult) bool) stmtResult {
		t.Helper()
		for _, s := range all {
			if match(s) {
				return s
			}
		}
		t.Errorf("no recorded statement: %s", what)
		return stmtResult{}
	}
	hasParam := func(s stmtResult, v string) bool {
		for _, p := range s.st.Params {
			if p.Value == v {
				return true
			}
		}
		return false
	}
	mentions := func(s stmtResult, v string) bool {
		if bound {
			return hasParam(s, v)
		}
		return strings.Contains(s.st.Text, v)
	}
	executed := func(s stmtResult, tag string) bool {
		return s.st.Decision == "allow" && s.res != nil && s.res.Executed && s.res.Error == "" && s.res.Tag == tag
	}
	failedWith := func(s stmtResult, code string) bool {
		return s.st.Decision == "allow" && s.res != nil && s.res.Executed && s.res.SQLState == code
	}
	email := tag + "@example.com"

	find("select count(*) from orders, 1 row", func(s stmtResult) bool {
		return s.st.Text == "select count(*) from orders" && executed(s, "SELECT 1") && s.res.Rows != nil && *s.res.Rows == 1
	})
	find("the parameterized select with 'failed'", func(s stmtResult) bool {
		return strings.Contains(s.st.Text, "from orders where status =") && mentions(s, "failed") && executed(s, "SELECT 1")
	})
	find("the insert", func(s stmtResult) bool {
		return s.st.Class.Kind == "INSERT" && mentions(s, email) && executed(s, "INSERT 0 1")
	})
	find("the update", func(s stmtResult) bool {
		return s.st.Class.Kind == "UPDATE" && mentions(s, email) && executed(s, "UPDATE 1")
	})
	find("the insert in the rolled-back transaction", func(s stmtResult) bool {
		return s.st.Class.Kind == "INSERT" && mentions(s, tag+"-rb@example.com") && executed(s, "INSERT 0 1")
	})
	find("the rollback", func(s stmtResult) bool { return s.st.Class.Kind == "ROLLBACK" && executed(s, "ROLLBACK") })
	find("the division by zero, failed with 22012", func(s stmtResult) bool {
		return strings.Contains(s.st.Text, "1/0") && failedWith(s, "22012")
	})
	find("the duplicate insert, failed with 23505", func(s stmtResult) bool {
		return s.st.Class.Kind == "INSERT" && mentions(s, email) && failedWith(s, "23505")
	})
	drop := find("the refused drop", func(s stmtResult) bool { return s.st.Text == "drop table orders" })
	if drop.st != nil {
		if drop.st.Decision != "deny" || drop.st.Rule != "access-level" || !strings.Contains(drop.st.Reason, "requires ddl access") || drop.st.Class.Kind != "DROP TABLE" {
			t.Errorf("refused drop recorded as %+v", drop.st)
		}
		if drop.res != nil {
			t.Errorf("refused drop has a result: %+v", drop.res)
		}
	}
	find("the statement after the refusal", func(s stmtResult) bool {
		return strings.Contains(s.st.Text, "'after refusal'") && executed(s, "SELECT 1")
	})
	// Nothing allowed is left without an outcome.
	for _, s := range all {
		if s.st.Decision == "allow" && s.res == nil {
			t.Errorf("allowed statement %q has no result", s.st.Text)
		}
	}
}

// clientEnv is the environment of a client program: the connection in
// the standard PG* variables and the tag for the rows it writes.
func clientEnv(g *gateway, token, tag string) []string {
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PG") })
	return append(env, "PGHOST="+host, "PGPORT="+port, "PGUSER=agent-1", "PGPASSWORD="+token,
		"PGDATABASE=demo-pg", "PGSSLMODE=require", "PGCONNECT_TIMEOUT=10", "CLIENT_TAG="+tag)
}

// runClient runs a client program and returns the "step<TAB>value" lines
// it printed. A client that exits non-zero fails the test with its output.
func runClient(t *testing.T, timeout time.Duration, env []string, dir string, name string, args ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Dir = env, dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s ran for %v", filepath.Base(name), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	out := map[string]string{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "\t"); ok {
			if prev, dup := out[k]; dup {
				v = prev + "|" + v // a step printed more than once
			}
			out[k] = v
		}
	}
	return out
}

// clientsDir is e2e/clients, where the client programs' sources are.
func clientsDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("clients")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPostgresClientPsql: psql runs the script, the common meta-commands,
// \copy both ways, \gdesc, a refused \lo_import (FunctionCall) and -f
// scripts with errors, with and without ON_ERROR_STOP.
func TestPostgresClientPsql(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	grant, tok := grantFor(t, g, "write")
	const tag = "psql"

	// The script, with psql's own parameter interpolation (:'v' quotes a
	// variable; PostgreSQL 15's psql has no \bind).
	script := `\set status failed
\set email psql@example.com
\pset format unaligned
\pset tuples_only on
select count(*) from orders;
select count(*) from orders where status = :'status';
insert into customers (name, email) values ('psql', :'email');
update customers set name = name || ' (updated)' where email = :'email';
begin;
insert into customers (name, email) values ('psql rolled back', 'psql-rb@example.com');
rollback;
select 1/0;
insert into customers (name, email) values ('psql', :'email');
select count(*) from customers where email = :'email';
drop table orders;
select 'after refusal';
`
	out, err := g.psql("agent-1", tok, "demo-pg", script)
	if err != nil {
		t.Fatalf("psql script: %v\n%s", err, out)
	}
	for _, want := range []string{
		"200\n25\nINSERT 0 1\nUPDATE 1\nBEGIN\nINSERT 0 1\nROLLBACK\n",
		"ERROR:  22012: division by zero",
		"ERROR:  23505: duplicate key value violates unique constraint",
		"\n1\n",
		"ERROR:  42501: airlock: DROP TABLE requires ddl access",
		"after refusal",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("psql output lacks %q:\n%s", want, out)
		}
	}
	checkScriptUpstream(t, g, tag)
	checkClientEvents(t, grantSessions(t, g, grant, 1), grant, tag, false)

	t.Run("meta-commands", func(t *testing.T) {
		grant, tok := grantFor(t, g, "read")
		out, err := g.psql("agent-1", tok, "demo-pg", "\\d orders\n\\dt\n\\dn\n\\df\n\\l\n\\d+ customers\n\\dt+\n\\l+\n\\dp\n\\dv\n\\di\n\\du\n\\conninfo\n")
		if err != nil {
			t.Fatalf("meta-commands: %v\n%s", err, out)
		}
		for _, want := range []string{
			`Table "public.orders"`, "customer_id", `"orders_pkey" PRIMARY KEY, btree (id)`,
			`"orders_created_at_idx" btree (created_at)`, "orders_status_check", "orders_customer_id_fkey",
			"List of relations", "customers", // \dt
			"List of schemas", "public", // \dn
			"List of functions",        // \df
			"List of databases", "app", // \l
			`Table "public.customers"`,             // \d+
			"Persistence",                          // \dt+ (pg_table_size)
			"Tablespace",                           // \l+ (pg_database_size)
			"Access privileges",                    // \dp
			"customers_email_key",                  // \di
			"List of roles",                        // \du
			`database "demo-pg" as user "agent-1"`, // \conninfo
		} {
			if !strings.Contains(out, want) {
				t.Errorf("meta-command output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "ERROR") {
			t.Errorf("a meta-command was refused or failed:\n%s", out)
		}
		// Each meta-command's catalog queries are recorded, allowed.
		stmts := grantStatements(grantSessions(t, g, grant, 1))
		if len(stmts) < 10 {
			t.Errorf("meta-commands recorded %d statements, want at least 10", len(stmts))
		}
		for _, s := range stmts {
			if s.st.Decision != "allow" || s.res == nil || !s.res.Executed {
				t.Errorf("meta-command query %q: %s %+v", s.st.Text, s.st.Decision, s.res)
			}
		}
	})

	t.Run("copy", func(t *testing.T) {
		grant, tok := grantFor(t, g, "write")
		dir := t.TempDir()
		ordersCSV, idsFile, inFile := filepath.Join(dir, "orders.csv"), filepath.Join(dir, "ids.txt"), filepath.Join(dir, "in.csv")
		var in strings.Builder
		for i := range 5 {
			fmt.Fprintf(&in, "copy %d,copy%d@example.com\n", i, i)
		}
		if err := os.WriteFile(inFile, []byte(in.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf(`\copy orders to '%s' with (format csv, header)
\copy (select id from orders where status = 'failed' order by id) to '%s'
\copy customers (name, email) from '%s' with (format csv)
select 'copied';
`, ordersCSV, idsFile, inFile)
		out, err := g.psql("agent-1", tok, "demo-pg", script)
		if err != nil {
			t.Fatalf("\\copy: %v\n%s", err, out)
		}
		for _, want := range []string{"COPY 200", "COPY 25", "COPY 5", "copied"} {
			if !strings.Contains(out, want) {
				t.Errorf("\\copy output lacks %q:\n%s", want, out)
			}
		}
		if b, _ := os.ReadFile(ordersCSV); bytes.Count(b, []byte("\n")) != 201 || !bytes.HasPrefix(b, []byte("id,customer_id,status,amount,created_at\n")) {
			t.Errorf("\\copy orders to a file wrote %d lines:\n%.300s", bytes.Count(b, []byte("\n")), b)
		}
		if b, _ := os.ReadFile(idsFile); bytes.Count(b, []byte("\n")) != 25 {
			t.Errorf("\\copy (select ...) to a file wrote:\n%s", b)
		}
		if n := g.pg.QueryInt(t, "select count(*) from customers where email like 'copy_@example.com'"); n != 5 {
			t.Errorf("upstream: %d rows copied in, want 5", n)
		}
		// Each COPY is recorded with the row count of its completion tag.
		rows := map[string]int64{}
		for _, s := range grantStatements(grantSessions(t, g, grant, 1)) {
			if s.st.Class.Kind == "COPY" && s.res != nil && s.res.Rows != nil {
				rows[s.st.Text] = *s.res.Rows
			}
		}
		for text, want := range map[string]int64{
			// psql sends \copy as COPY with its own spacing.
			"COPY  orders TO STDOUT": 200, "from orders where status = 'failed' order by id ) TO STDOUT": 25, "COPY  customers ( name, email ) FROM STDIN": 5,
		} {
			found := false
			for got, n := range rows {
				if strings.Contains(got, text) {
					found = true
					if n != want {
						t.Errorf("COPY %q recorded %d rows, want %d", got, n, want)
					}
				}
			}
			if !found {
				t.Errorf("no COPY with %q recorded; recorded: %v", text, rows)
			}
		}

		// Under a read grant, \copy from a file is refused before any row
		// is sent upstream, and the session goes on.
		_, readTok := grantFor(t, g, "read")
		out, err = g.psql("agent-1", readTok, "demo-pg", fmt.Sprintf("\\copy customers (name, email) from '%s' with (format csv)\nselect 'still here';\n", inFile), "-At")
		if err != nil || !strings.Contains(out, "ERROR:  42501: airlock: COPY requires write access") || !strings.Contains(out, "still here") {
			t.Errorf("\\copy from under a read grant: %v\n%s", err, out)
		}
		if n := g.pg.QueryInt(t, "select count(*) from customers where email like 'copy_@example.com'"); n != 5 {
			t.Errorf("upstream: %d copied rows after a refused \\copy, want 5", n)
		}
	})

	t.Run("gdesc and large objects", func(t *testing.T) {
		grant, tok := grantFor(t, g, "write")
		blob := filepath.Join(t.TempDir(), "blob")
		if err := os.WriteFile(blob, []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
		// \gdesc prepares and describes without executing. \lo_import
		// calls lo_creat and friends with FunctionCall messages, which
		// the gateway refuses; psql reports it and goes on.
		out, err := g.psql("agent-1", tok, "demo-pg", "select * from orders \\gdesc\n\\lo_import "+blob+"\nselect 'after lo_import';\n\\lo_list\n")
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		for _, want := range []string{
			"amount      | numeric(10,2)",
			"ERROR:  42501: airlock: the FunctionCall protocol message is not allowed through airlock",
			"after lo_import", "Large objects",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("psql output lacks %q:\n%s", want, out)
			}
		}
		if n := g.pg.QueryInt(t, "select count(*) from pg_largeobject_metadata"); n != 0 {
			t.Errorf("upstream: %d large objects after a refused \\lo_import", n)
		}
		var refused bool
		for _, s := range grantStatements(grantSessions(t, g, grant, 1)) {
			refused = refused || s.st.Decision == "deny" && s.st.Rule == "function-call"
		}
		if !refused {
			t.Errorf("the FunctionCall is not recorded as refused")
		}
	})

	t.Run("file scripts with errors", func(t *testing.T) {
		_, tok := grantFor(t, g, "write")
		file := filepath.Join(t.TempDir(), "script.sql")
		body := `insert into customers (name, email) values ('f1', 'f1@example.com');
select 1/0;
insert into customers (name, email) values ('f2', 'f2@example.com');
drop table orders;
insert into customers (name, email) values ('f3', 'f3@example.com');
`
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		// Without ON_ERROR_STOP psql reports each error with its line and
		// carries on; its exit status is 0.
		out, err := g.psql("agent-1", tok, "demo-pg", "", "-f", file)
		if err != nil {
			t.Fatalf("psql -f: %v\n%s", err, out)
		}
		for _, want := range []string{
			"script.sql:2: ERROR:  22012: division by zero",
			"script.sql:4: ERROR:  42501: airlock: DROP TABLE requires ddl access",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("psql -f output lacks %q:\n%s", want, out)
			}
		}
		if n := g.pg.QueryInt(t, "select count(*) from customers where email in ('f1@example.com', 'f2@example.com', 'f3@example.com')"); n != 3 {
			t.Errorf("psql -f without ON_ERROR_STOP: %d of 3 inserts ran", n)
		}

		// With ON_ERROR_STOP, psql stops at the first error with exit
		// status 3: at the server's error in one file, at the gateway's
		// refusal in the other; nothing after it reaches the upstream.
		g.pg.Exec(t, "delete from customers where email like 'f_@example.com'")
		for name, stopAt := range map[string]string{"server error": "select 1/0;", "refusal": "drop table orders;"} {
			grant, tok := grantFor(t, g, "write")
			body := "insert into customers (name, email) values ('f1', 'f1@example.com');\n" + stopAt +
				"\ninsert into customers (name, email) values ('f2', 'f2@example.com');\n"
			if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := g.psql("agent-1", tok, "demo-pg", "", "-v", "ON_ERROR_STOP=1", "-f", file)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Errorf("%s: psql -v ON_ERROR_STOP=1 -f: exit %v, want 3\n%s", name, err, out)
			}
			if !strings.Contains(out, "script.sql:2: ERROR:") {
				t.Errorf("%s: psql does not report the error at line 2:\n%s", name, out)
			}
			if n := g.pg.QueryInt(t, "select count(*) from customers where email = 'f1@example.com'"); n != 1 {
				t.Errorf("%s: the statement before the error did not run", name)
			}
			if n := g.pg.QueryInt(t, "select count(*) from customers where email = 'f2@example.com'"); n != 0 {
				t.Errorf("%s: a statement after the error ran", name)
			}
			// The record holds the two statements psql sent, the second
			// failed or refused, and nothing after them.
			var rec []string
			for _, s := range grantStatements(grantSessions(t, g, grant, 1)) {
				r := s.st.Decision
				if s.res != nil {
					r += " " + s.res.Tag + s.res.SQLState
				}
				rec = append(rec, r)
			}
			want := []string{"allow INSERT 0 1", "allow 22012"}
			if name == "refusal" {
				want[1] = "deny"
			}
			if !slices.Equal(rec, want) {
				t.Errorf("%s: recorded %q, want %q", name, rec, want)
			}
			g.pg.Exec(t, "delete from customers where email like 'f_@example.com'")
		}
	})
}

var pgbenchTPS = regexp.MustCompile(`number of transactions actually processed: (\d+)/(\d+)`)

// TestPostgresClientPgbench: pgbench initialises its tables through the
// gateway, then runs its TPC-B-like script in the simple, extended and
// prepared query modes under a write grant. (pgbench aborts a client at
// its first error, so it runs its own script, not the matrix's.)
func TestPostgresClientPgbench(t *testing.T) {
	testenv.RequireBinary(t, "pgbench", "postgresql-client")
	g := startGateway(t, gatewayOptions{})
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	pgbench := func(token string, args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "pgbench", append([]string{"-h", host, "-p", port, "-U", "agent-1"}, append(args, "demo-pg")...)...)
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PG") }),
			"PGPASSWORD="+token, "PGSSLMODE=require", "PGCONNECT_TIMEOUT=10")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("pgbench %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
		return string(out), err
	}

	// Initialisation drops, creates, fills (COPY), vacuums and adds
	// primary keys: DDL that drops, so the grant is ddl with --allow-drop.
	initGrant, initTok := grantFor(t, g, "ddl", "--allow-drop")
	out, err := pgbench(initTok, "-i", "-s", "1")
	if err != nil || !strings.Contains(out, "done in") {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	if n := g.pg.QueryInt(t, "select count(*) from pgbench_accounts"); n != 100000 {
		t.Fatalf("upstream: %d pgbench_accounts after pgbench -i, want 100000", n)
	}
	initSessions := grantSessions(t, g, initGrant, 1)
	checkSessionsWellFormed(t, initSessions, initGrant)
	var copied bool
	for _, s := range grantStatements(initSessions) {
		if s.st.Decision != "allow" || s.res == nil || s.res.Error != "" {
			t.Errorf("pgbench -i: %q %s: %+v (%s)", s.st.Text, s.st.Decision, s.res, s.st.Reason)
		}
		if s.st.Class.Kind == "COPY" && s.res != nil && s.res.Rows != nil && *s.res.Rows == 100000 {
			copied = true
		}
	}
	if !copied {
		t.Errorf("pgbench -i: no COPY of 100000 rows recorded")
	}

	// The runs need only write access. -n skips pgbench's own vacuum and
	// truncate, which would need ddl.
	runGrant, runTok := grantFor(t, g, "write")
	const clients, perClient = 2, 25
	history := int64(0)
	for _, mode := range []string{"simple", "extended", "prepared"} {
		out, err := pgbench(runTok, "-n", "-M", mode, "-c", fmt.Sprint(clients), "-t", fmt.Sprint(perClient))
		m := pgbenchTPS.FindStringSubmatch(out)
		if err != nil || m == nil || m[1] != fmt.Sprint(clients*perClient) || m[1] != m[2] {
			t.Fatalf("pgbench -M %s: %v\n%s", mode, err, out)
		}
		if strings.Contains(out, "number of failed transactions: ") && !strings.Contains(out, "number of failed transactions: 0 ") {
			t.Errorf("pgbench -M %s had failed transactions:\n%s", mode, out)
		}
		history += clients * perClient
		if n := g.pg.QueryInt(t, "select count(*) from pgbench_history"); n != history {
			t.Errorf("pgbench -M %s: upstream has %d history rows, want %d", mode, n, history)
		}
	}
	// Without -n, pgbench first vacuums and truncates, which a write
	// grant refuses; pgbench reports each refusal, carries on and runs.
	out, err = pgbench(runTok, "-M", "simple", "-c", "1", "-t", "5")
	if m := pgbenchTPS.FindStringSubmatch(out); err != nil || m == nil || m[1] != "5" ||
		!strings.Contains(out, "airlock: VACUUM requires ddl access") || !strings.Contains(out, "ignoring this error and continuing anyway") {
		t.Errorf("pgbench without -n under a write grant: %v\n%s", err, out)
	}
	history += 5
	if n := g.pg.QueryInt(t, "select count(*) from pgbench_history"); n != history {
		t.Errorf("pgbench without -n: upstream has %d history rows, want %d (its truncate must have been refused)", n, history)
	}
	runSessions := grantSessions(t, g, runGrant, 3*clients+1)
	checkSessionsWellFormed(t, runSessions, runGrant)
	kinds := map[string]int{}
	var refused []string
	for _, s := range grantStatements(runSessions) {
		if s.st.Decision == "deny" {
			refused = append(refused, s.st.Text)
			continue
		}
		if s.res == nil || !s.res.Executed || s.res.Error != "" {
			t.Errorf("pgbench run: %q %s: %+v", s.st.Text, s.st.Decision, s.res)
		}
		kinds[s.st.Class.Kind]++
	}
	if want := []string{"vacuum pgbench_branches", "vacuum pgbench_tellers", "truncate pgbench_history"}; !slices.Equal(refused, want) {
		t.Errorf("pgbench runs: refused %q, want %q", refused, want)
	}
	// Each transaction: BEGIN, three UPDATEs, a SELECT, an INSERT, END.
	txns := 3*clients*perClient + 5
	if kinds["INSERT"] != txns || kinds["UPDATE"] != 3*txns || kinds["BEGIN"] != txns || kinds["COMMIT"] != txns {
		t.Errorf("pgbench runs recorded %v, want %d transactions of BEGIN, 3 UPDATE, SELECT, INSERT, COMMIT", kinds, txns)
	}
	var params bool
	for _, s := range grantStatements(runSessions) {
		if s.st.Class.Kind == "UPDATE" && len(s.st.Params) == 2 {
			params = true
		}
	}
	if !params {
		t.Errorf("the extended and prepared runs recorded no bound parameters")
	}
}

// TestPostgresClientPgx: pgx runs the script over the extended protocol,
// then batches (pipelines) with a refusal in the middle in every query
// mode, a pipeline of several Syncs, COPY FROM and COPY TO. Cancel by
// context is TestPostgresCancel.
func TestPostgresClientPgx(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	grant, tok := grantFor(t, g, "write")
	const tag = "pgx"
	email := tag + "@example.com"
	conn := connectPgx(t, g, "agent-1", tok)
	ctx := context.Background()
	got := map[string]string{}
	errText := func(err error) string {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return "ERROR " + pe.Code + ": " + pe.Message
		}
		return "ERROR " + err.Error()
	}
	query := func(step, sql string, args ...any) {
		var v any
		if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
			got[step] = errText(err)
			return
		}
		got[step] = fmt.Sprint(v)
	}
	exec := func(step, sql string, args ...any) {
		tag, err := conn.Exec(ctx, sql, args...)
		if err != nil {
			got[step] = errText(err)
			return
		}
		got[step] = fmt.Sprint(tag.RowsAffected())
	}
	query("count", "select count(*) from orders")
	query("param", "select count(*) from orders where status = $1", "failed")
	exec("insert", "insert into customers (name, email) values ($1, $2)", tag, email)
	exec("update", "update customers set name = name || ' (updated)' where email = $1", email)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := tx.Exec(ctx, "insert into customers (name, email) values ($1, $2)", tag+" rolled back", tag+"-rb@example.com")
	got["tx_insert"] = fmt.Sprint(ct.RowsAffected())
	if err != nil {
		got["tx_insert"] = errText(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	got["rollback"] = "ok"
	query("div0", "select 1/0")
	exec("unique", "insert into customers (name, email) values ($1, $2)", tag, email)
	query("recovered", "select count(*) from customers where email = $1", email)
	exec("refused", "drop table orders")
	query("after", "select 'after refusal'")
	checkScriptOutput(t, got)
	// An error at Parse (an unknown table), with Parse, Bind, Execute and
	// Sync sent at once (in pgx's default mode the Parse goes first, alone,
	// and fails before any Execute is sent).
	query("parse_error", "select * from no_such_table where id = $1", pgx.QueryExecModeExec, 1)
	if !strings.HasPrefix(got["parse_error"], "ERROR 42P01") {
		t.Errorf("unknown table: %s", got["parse_error"])
	}
	checkScriptUpstream(t, g, tag)

	// Batches: five queries sent as one pipeline before one Sync, the
	// third refused. The two before it run; the refused one and the two
	// after it do not; the connection stays usable. The gateway refuses a
	// statement where the server would have failed to prepare it, so the
	// client must see exactly what PostgreSQL gives when the third query
	// fails at Parse (an unknown table), which the same batch against the
	// upstream directly shows: in every query mode of pgx, the same results
	// and the same rows left (the pipeline's implicit transaction is rolled
	// back after an error, so even the first insert does not stay).
	batchRun := func(c *pgx.Conn, third string, n int) []string {
		b := &pgx.Batch{}
		b.Queue("insert into customers (name, email) values ($1, $2)", "batch", fmt.Sprintf("batch%d-1@example.com", n))
		b.Queue("select count(*) from orders where status = $1", "paid")
		b.Queue(third)
		b.Queue("insert into customers (name, email) values ($1, $2)", "batch", fmt.Sprintf("batch%d-4@example.com", n))
		b.Queue("select 'after'")
		br := c.SendBatch(ctx, b)
		var res []string
		for range 5 {
			rows, err := br.Query()
			if err == nil {
				for rows.Next() {
				}
				err = rows.Err()
			}
			var pe *pgconn.PgError
			switch {
			case errors.As(err, &pe):
				res = append(res, pe.Code)
			case err != nil:
				res = append(res, "error")
			default:
				res = append(res, rows.CommandTag().String())
			}
		}
		_ = br.Close()
		return res
	}
	modeConn := func(dsn string, mode pgx.QueryExecMode) *pgx.Conn {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = mode
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connect in %v: %v", mode, err)
		}
		return c
	}
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	viaAirlock := fmt.Sprintf("host=%s port=%s user=agent-1 password=%s dbname=demo-pg sslmode=require", host, port, tok)
	for i, mode := range []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeSimpleProtocol} {
		n := 100 + i
		before := g.pg.QueryInt(t, "select count(*) from customers")
		direct := modeConn(g.pg.DSN(), mode)
		want := batchRun(direct, "select * from no_such_table", n)
		direct.Close(ctx)
		wantRows := g.pg.QueryInt(t, "select count(*) from customers")
		c := modeConn(viaAirlock, mode)
		got := batchRun(c, "drop table orders", n)
		// The gateway's refusal stands where the server's error stood.
		for j := range want {
			if want[j] == "42P01" {
				want[j] = "42501"
			}
		}
		if mode == pgx.QueryExecModeSimpleProtocol {
			// pgx sends the batch as one Query of five statements: the
			// gateway refuses such a message whole (statement 3 refused,
			// so none runs), where the server runs the first two and
			// then rolls them back. The rows left are the same.
			want = []string{"42501", "42501", "42501", "42501", "42501"}
		}
		if !slices.Equal(got, want) {
			t.Errorf("batch in %v: through airlock %v, want %v", mode, got, want)
		}
		if rows := g.pg.QueryInt(t, "select count(*) from customers"); rows != wantRows || rows != before {
			t.Errorf("batch in %v: upstream has %d customers, %d directly, %d before", mode, rows, wantRows, before)
		}
		var v string
		if err := c.QueryRow(ctx, "select 'usable'").Scan(&v); err != nil || v != "usable" {
			t.Fatalf("after the batch in %v: %v", mode, err)
		}
		c.Close(ctx)
		t.Logf("batch in %v: %v", mode, got)
	}

	// A pipeline with a Sync after each query: the query after the
	// refusal is in the next segment, so it runs; the one before stays
	// committed.
	p := conn.PgConn().StartPipeline(ctx)
	p.SendQueryParams("insert into customers (name, email) values ($1, $2)", [][]byte{[]byte("pipe"), []byte("pipe1@example.com")}, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	p.SendQueryParams("drop table orders", nil, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	p.SendQueryParams("insert into customers (name, email) values ($1, $2)", [][]byte{[]byte("pipe"), []byte("pipe2@example.com")}, nil, nil, nil)
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	var pipeRes []string
	for {
		r, err := p.GetResults()
		if err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) {
				pipeRes = append(pipeRes, pe.Code)
				continue
			}
			t.Fatalf("pipeline: %v", err)
		}
		if r == nil {
			break
		}
		switch r := r.(type) {
		case *pgconn.ResultReader:
			tag, err := r.Close()
			if err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) {
					pipeRes = append(pipeRes, pe.Code)
					continue
				}
				t.Fatal(err)
			}
			pipeRes = append(pipeRes, tag.String())
		case *pgconn.PipelineSync:
			pipeRes = append(pipeRes, "sync")
		}
	}
	if err := p.Close(); err != nil {
		t.Fatalf("closing the pipeline: %v", err)
	}
	if want := []string{"INSERT 0 1", "sync", "42501", "sync", "INSERT 0 1", "sync"}; !slices.Equal(pipeRes, want) {
		t.Errorf("pipeline with a Sync per query: %v, want %v", pipeRes, want)
	}
	if n := g.pg.QueryInt(t, "select count(*) from customers where email in ('pipe1@example.com', 'pipe2@example.com')"); n != 2 {
		t.Errorf("pipeline with a Sync per query: upstream has %d of its 2 rows", n)
	}

	// COPY FROM STDIN (pgx sends the binary format) and COPY TO STDOUT.
	rows := make([][]any, 1000)
	for i := range rows {
		rows[i] = []any{fmt.Sprintf("copy %d", i), fmt.Sprintf("pgxcopy%d@example.com", i)}
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"customers"}, []string{"name", "email"}, pgx.CopyFromRows(rows))
	if err != nil || n != 1000 {
		t.Fatalf("CopyFrom: %d rows, %v", n, err)
	}
	if n := g.pg.QueryInt(t, "select count(*) from customers where email like 'pgxcopy%'"); n != 1000 {
		t.Errorf("upstream: %d rows after CopyFrom, want 1000", n)
	}
	var buf bytes.Buffer
	ct, err = conn.PgConn().CopyTo(ctx, &buf, "copy (select email from customers where email like 'pgxcopy%' order by id) to stdout")
	if err != nil || ct.RowsAffected() != 1000 || bytes.Count(buf.Bytes(), []byte("\n")) != 1000 || !strings.HasPrefix(buf.String(), "pgxcopy0@example.com\n") {
		t.Errorf("CopyTo: %v, %v, %d lines", ct, err, bytes.Count(buf.Bytes(), []byte("\n")))
	}
	// A COPY FROM refused under a read grant: pgx streams the data without
	// waiting for the server's go-ahead; the upstream, never in copy mode,
	// drops it, and the connection carries on.
	_, readTok := grantFor(t, g, "read")
	reader := connectPgx(t, g, "agent-1", readTok)
	_, err = reader.CopyFrom(ctx, pgx.Identifier{"customers"}, []string{"name", "email"}, pgx.CopyFromRows(rows[:10]))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Errorf("CopyFrom under a read grant: %v", err)
	}
	var v string
	if err := reader.QueryRow(ctx, "select 'after refused copy'").Scan(&v); err != nil {
		t.Errorf("after a refused CopyFrom: %v", err)
	}
	if n := g.pg.QueryInt(t, "select count(*) from customers where email like 'pgxcopy%'"); n != 1000 {
		t.Errorf("upstream: %d rows after a refused CopyFrom, want 1000", n)
	}
	conn.Close(ctx)

	sessions := grantSessions(t, g, grant, 1)
	checkClientEvents(t, sessions, grant, tag, true)
	// The statements that failed at Parse or Bind (1/0, folded by the
	// planner, fails at Bind) are recorded with the server's error, not as
	// skipped; checkClientEvents checked 1/0.
	var parseErr bool
	for _, s := range grantStatements(sessions) {
		if strings.Contains(s.st.Text, "no_such_table") && s.res != nil && s.res.Executed && s.res.SQLState == "42P01" {
			parseErr = true
		}
	}
	if !parseErr {
		t.Errorf("the statement that failed at Parse is not recorded with 42P01")
	}
	// The batch of the exec mode (batch100-*), as recorded: the first
	// insert executed (then rolled back with the pipeline), the last one
	// admitted but never executed. Every refused drop is recorded once:
	// the script's, one per batch mode and the pipeline's.
	drops, before, after := 0, 0, 0
	for _, s := range grantStatements(sessions) {
		param := func(v string) bool { return len(s.st.Params) == 2 && s.st.Params[1].Value == v }
		switch {
		case s.st.Text == "drop table orders" && s.st.Decision == "deny":
			drops++
		case param("batch100-1@example.com") && s.res != nil && s.res.Tag == "INSERT 0 1":
			before++
		case param("batch100-4@example.com") && s.res != nil && !s.res.Executed && strings.HasPrefix(s.res.Error, "not executed"):
			after++
		}
	}
	if drops != 7 || before != 1 || after != 1 {
		t.Errorf("recorded: %d refused drops (want 7), the exec-mode batch's insert before the refusal executed %d times (want 1), the one after it not executed %d times (want 1)", drops, before, after)
	}
	var copyRows []int64
	for _, s := range grantStatements(sessions) {
		if s.st.Class.Kind == "COPY" && s.res != nil && s.res.Rows != nil {
			copyRows = append(copyRows, *s.res.Rows)
		}
	}
	if !slices.Equal(copyRows, []int64{1000, 1000}) {
		t.Errorf("COPY results recorded: %v, want [1000 1000]", copyRows)
	}
}

// TestPostgresClientPsycopg2: libpq through Python's psycopg2 runs the
// script, reads through a server-side (named) cursor, meets a refusal
// while one is open, and copies in and out.
func TestPostgresClientPsycopg2(t *testing.T) {
	// Debian's python3 and its psycopg2, not whatever python3 is first on
	// PATH (a pyenv shim does not see Debian's dist-packages).
	python := testenv.RequireFile(t, "/usr/bin/python3", "python3")
	testenv.RequireFile(t, "/usr/lib/python3/dist-packages/psycopg2/__init__.py", "python3-psycopg2")
	g := startGateway(t, gatewayOptions{})
	grant, tok := grantFor(t, g, "write")
	const tag = "psycopg2"
	got := runClient(t, time.Minute, clientEnv(g, tok, tag), "", python, filepath.Join(clientsDir(t), "python", "client_script.py"))
	checkScriptOutput(t, got)
	for step, want := range map[string]string{
		"cursor_rows": "200", "cursor_id_sum": "20100", "cursor_first": "5", "cursor_after": "after cursor",
		"copy_in": "7", "copy_out": "7",
	} {
		if got[step] != want {
			t.Errorf("step %s: got %q, want %q", step, got[step], want)
		}
	}
	if !strings.HasPrefix(got["cursor_refused"], "ERROR 42501: airlock: DROP TABLE requires ddl access") {
		t.Errorf("refusal with a cursor open: %q", got["cursor_refused"])
	}
	checkScriptUpstream(t, g, tag)
	sessions := grantSessions(t, g, grant, 1)
	checkClientEvents(t, sessions, grant, tag, false)
	// The cursor is declared once and fetched from in itersize steps: 200
	// rows by 60 (psycopg2 stops at an empty FETCH).
	var fetched []int64
	declared := false
	for _, s := range grantStatements(sessions) {
		switch s.st.Class.Kind {
		case "DECLARE CURSOR":
			declared = declared || strings.Contains(s.st.Text, `"airlock_orders"`)
		case "FETCH":
			if strings.Contains(s.st.Text, `"airlock_orders"`) && s.res != nil && s.res.Rows != nil {
				fetched = append(fetched, *s.res.Rows)
			}
		}
	}
	if !declared || !slices.Equal(fetched, []int64{60, 60, 60, 20, 0}) {
		t.Errorf("server-side cursor recorded: declared %v, fetches %v; want [60 60 60 20 0]", declared, fetched)
	}
	if n := g.pg.QueryInt(t, "select count(*) from customers where email like 'psycopg2-copy_@example.com'"); n != 7 {
		t.Errorf("upstream: %d rows copied in, want 7", n)
	}
	var copyRows []int64
	for _, s := range grantStatements(sessions) {
		if s.st.Class.Kind == "COPY" && s.res != nil && s.res.Rows != nil {
			copyRows = append(copyRows, *s.res.Rows)
		}
	}
	if !slices.Equal(copyRows, []int64{7, 7}) {
		t.Errorf("COPY results recorded: %v, want [7 7]", copyRows)
	}
}

// nodeModules installs the node client's locked dependencies.
func nodeModules(t *testing.T) string {
	return npmModules(t, filepath.Join(clientsDir(t), "node"), "pg")
}

// npmModules installs the locked dependencies of the npm package in src
// (npm ci) once per lockfile into the user's cache and returns the
// node_modules path; marker is a module the install must contain.
func npmModules(t *testing.T, src, marker string) string {
	t.Helper()
	testenv.RequireBinary(t, "node", "nodejs")
	npm := testenv.RequireBinary(t, "npm", "npm")
	pkg, err := os.ReadFile(filepath.Join(src, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := os.ReadFile(filepath.Join(src, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append(pkg, lock...))
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "airlock", "npm-"+hex.EncodeToString(sum[:8]))
	installed := filepath.Join(dir, "node_modules", marker, "package.json")
	if fileExists(installed) {
		return filepath.Join(dir, "node_modules")
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	// Install beside, then rename into place, so a concurrent test process
	// never sees half a tree.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "npm-tmp-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	for name, b := range map[string][]byte{"package.json": pkg, "package-lock.json": lock} {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", src, err, out)
	}
	if err := os.Rename(tmp, dir); err != nil && !fileExists(installed) {
		t.Fatal(err)
	}
	return filepath.Join(dir, "node_modules")
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestPostgresClientNodePg: node-postgres runs the script (parameterized
// queries over the extended protocol, the others over the simple one),
// then named prepared statements: parsed once, executed again by name.
func TestPostgresClientNodePg(t *testing.T) {
	modules := nodeModules(t)
	g := startGateway(t, gatewayOptions{})
	grant, tok := grantFor(t, g, "write")
	const tag = "nodepg"
	env := append(clientEnv(g, tok, tag), "NODE_PATH="+modules)
	got := runClient(t, time.Minute, env, "", "node", filepath.Join(clientsDir(t), "node", "client_script.js"))
	checkScriptOutput(t, got)
	if got["named"] != "75,75,75" || got["named_after"] != "25" {
		t.Errorf("named statements: %q, after: %q", got["named"], got["named_after"])
	}
	for _, r := range strings.Split(got["named_refused"], "|") {
		if !strings.HasPrefix(r, "ERROR 42501: airlock: DROP TABLE requires ddl access") {
			t.Errorf("refused named statement: %q", got["named_refused"])
		}
	}
	checkScriptUpstream(t, g, tag)
	sessions := grantSessions(t, g, grant, 1)
	checkClientEvents(t, sessions, grant, tag, true)
	// Three refusals: the script's, and the refused named statement's two
	// tries, each recorded once (node-postgres sends Parse, Bind and
	// Execute of it at once).
	denied := 0
	for _, s := range grantStatements(sessions) {
		if s.st.Decision == "deny" {
			denied++
		}
	}
	if denied != 3 {
		t.Errorf("%d refusals recorded, want 3", denied)
	}
	// The named statement's three executions are each recorded with the
	// parameter they were bound with.
	paid := 0
	for _, s := range grantStatements(sessions) {
		if strings.Contains(s.st.Text, "where status = $1") && len(s.st.Params) == 1 && s.st.Params[0].Value == "paid" && s.res != nil && s.res.Tag == "SELECT 1" {
			paid++
		}
	}
	if paid != 3 {
		t.Errorf("named statement executions recorded: %d, want 3", paid)
	}
}

// TestPostgresClientJDBC: PgJDBC runs the script, a batch, a fetch-size
// read (row-limited Executes, PortalSuspended), and a PreparedStatement
// ten times with prepareThreshold 1 and 5: from the threshold on it is a
// server-side named statement, bound and executed without a new Parse.
func TestPostgresClientJDBC(t *testing.T) {
	javac := testenv.RequireBinary(t, "javac", "default-jdk-headless")
	java := testenv.RequireBinary(t, "java", "default-jdk-headless")
	jar := testenv.RequireFile(t, "/usr/share/java/postgresql.jar", "libpostgresql-jdbc-java")
	classes := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, javac, "-d", classes, "-cp", jar, filepath.Join(clientsDir(t), "java", "ClientScript.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac ClientScript.java: %v\n%s", err, out)
	}
	g := startGateway(t, gatewayOptions{})
	grant, tok := grantFor(t, g, "write")
	const tag = "jdbc"
	got := runClient(t, 2*time.Minute, clientEnv(g, tok, tag), "", java, "-cp", classes+string(os.PathListSeparator)+jar, "ClientScript")
	checkScriptOutput(t, got)
	if got["batch"] != "3" {
		t.Errorf("batch: %q", got["batch"])
	}
	if got["fetch"] != "200,20100" {
		t.Errorf("fetch size 50: %q rows,sum of ids; want 200,20100", got["fetch"])
	}
	if n := g.pg.QueryInt(t, "select count(*) from customers where email like 'jdbc-batch_@example.com'"); n != 3 {
		t.Errorf("upstream: %d rows of the batch, want 3", n)
	}
	for _, th := range []string{"1", "5"} {
		if want := "25,25,25,25,25,25,25,25,25,25"; got["prepared"+th] != want {
			t.Errorf("prepareThreshold=%s: %q, want %q", th, got["prepared"+th], want)
		}
		if got["prepared"+th+"_server"] != "1" {
			t.Errorf("prepareThreshold=%s: the statement is not a server-side prepared statement: %q", th, got["prepared"+th+"_server"])
		}
		for _, r := range strings.Split(got["prepared"+th+"_refused"], "|") {
			if !strings.HasPrefix(r, "ERROR 42501: airlock: ") {
				t.Errorf("prepareThreshold=%s: refused prepared statement: %q", th, got["prepared"+th+"_refused"])
			}
		}
		if got["prepared"+th+"_after"] != "75" {
			t.Errorf("prepareThreshold=%s: after the refusals: %q", th, got["prepared"+th+"_after"])
		}
	}
	checkScriptUpstream(t, g, tag)
	sessions := grantSessions(t, g, grant, 3)
	checkSessionsWellFormed(t, sessions, grant)
	checkClientEvents(t, sessions[:1], grant, tag, true)
	// The fetch: one Execute per 50 rows, each recorded with the rows it
	// returned; the server suspends the portal after each but the last.
	var fetches []string
	for _, s := range grantStatements(sessions[:1]) {
		if s.st.Text == "select id from orders order by id" && s.res != nil && s.res.Rows != nil {
			fetches = append(fetches, fmt.Sprintf("%s:%d", s.res.Tag, *s.res.Rows))
		}
	}
	if want := []string{"(portal suspended):50", "(portal suspended):50", "(portal suspended):50", "(portal suspended):50", "SELECT 0:0"}; !slices.Equal(fetches, want) {
		t.Errorf("fetch size 50 recorded as %q, want %q", fetches, want)
	}
	// In each prepared session, all ten executions are recorded with their
	// parameter, whether PgJDBC sent a Parse for them or only Bind and
	// Execute of the named statement.
	for i, th := range []string{"1", "5"} {
		var params []string
		refused := 0
		for _, s := range grantStatements(sessions[1+i : 2+i]) {
			if strings.Contains(s.st.Text, "from orders where status = $1") && len(s.st.Params) == 1 && s.res != nil && s.res.Tag == "SELECT 1" {
				params = append(params, s.st.Params[0].Value)
			}
			if strings.Contains(s.st.Text, "pg_read_file") && s.st.Decision == "deny" {
				refused++
			}
		}
		// Each refused execution recorded once, though PgJDBC sends Parse,
		// Bind and Execute of it in one pipeline.
		if len(params) != 11 || params[0] != "failed" || params[1] != "new" {
			t.Errorf("prepareThreshold=%s: recorded executions with params %v, want 10 alternating failed,new then paid", th, params)
		}
		if refused != 3 {
			t.Errorf("prepareThreshold=%s: %d refusals recorded, want 3", th, refused)
		}
	}
}
