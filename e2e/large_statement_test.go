package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// Statements larger than NATS's default max_payload (1 MiB): a 4 MB
// INSERT, a 4 MB bound parameter recorded whole (param_max_bytes 8 MiB),
// a prepared statement with 65,535 parameters. Each must run, be recorded
// and verify, and the session must go on after it; before format v4 each
// was refused as "recording unavailable" (the event failed to publish with
// "nats: maximum payload exceeded"), every later statement of the session
// too, and verify called the session tampered.

const bigLen = 4 << 20

// bigText is n bytes of text that differs at every position, so a cut or a
// swap in the record shows.
func bigText(n int) string {
	var b strings.Builder
	b.Grow(n + 16)
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%07d ", i)
	}
	return b.String()[:n]
}

// placeholders is "$1,$2,...,$n" (Postgres) or "?,?,...,?" (MySQL).
func placeholders(n int, pg bool) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteByte(',')
		}
		if pg {
			fmt.Fprintf(&b, "$%d", i)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

// verifyAll runs airlock sessions verify --all, then exports the newest
// session of agent-1 satisfying keep and verifies the file offline.
func verifyAll(t *testing.T, g *gateway, session string) {
	t.Helper()
	// The clients have closed; their sessions' ends are recorded as the
	// gateway notices.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var list []recorder.Summary
		g.CLIJSON(&list, "rita", "sessions", "list")
		open := 0
		for _, s := range list {
			if s.Status == recorder.StatusOpen {
				open++
			}
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still open 10s after their clients closed", open)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if stdout, stderr, code := g.CLIRun("rita", "sessions", "verify", "--all"); code != 0 {
		t.Fatalf("verify --all: exit %d\n%s%s", code, stdout, stderr)
	}
	file := filepath.Join(t.TempDir(), "export.json")
	g.MustCLI("rita", "sessions", "export", session, "-o", file)
	if stdout, stderr, code := g.CLIRun("rita", "sessions", "verify", "--file", file); code != 0 {
		t.Fatalf("verify --file of the export: exit %d\n%s%s", code, stdout, stderr)
	}
}

// statementWith is the first statement event of evs whose text has prefix.
func statementWith(evs []recorder.Event, prefix string) *recorder.Statement {
	for _, ev := range evs {
		if ev.Statement != nil && strings.HasPrefix(ev.Statement.Text, prefix) {
			return ev.Statement
		}
	}
	return nil
}

func TestLargeStatementsPostgres(t *testing.T) {
	for _, embedded := range []bool{false, true} {
		name := "nats-server"
		if embedded {
			name = "embedded"
		}
		t.Run(name, func(t *testing.T) {
			g := startGateway(t, gatewayOptions{EmbeddedNATS: embedded, Recorder: "  param_max_bytes: 8388608\n"})
			_, tok := grantFor(t, g, "write")
			big := bigText(bigLen)
			out, err := g.psql("agent-1", tok, "demo-pg",
				"insert into customers (name, email) values ('"+big+"', 'big-psql@example.com');\nselect 'after big' as check;\n")
			if err != nil || !strings.Contains(out, "INSERT 0 1") || !strings.Contains(out, "after big") {
				t.Fatalf("psql, a 4 MB INSERT and the next statement: %v\n%.2000s", err, out)
			}

			conn := connectPgx(t, g, "agent-1", tok)
			ctx := context.Background()
			if _, err := conn.Exec(ctx, "insert into customers (name, email) values ($1, $2)", big, "big-pgx@example.com"); err != nil {
				t.Fatalf("pgx, a 4 MB parameter: %v", err)
			}
			args := make([]any, 65535)
			for i := range args {
				args[i] = fmt.Sprintf("v%d", i)
			}
			var n int64
			if err := conn.QueryRow(ctx, "select count(*) from unnest(array["+placeholders(65535, true)+"]::text[])", args...).Scan(&n); err != nil || n != 65535 {
				t.Fatalf("pgx, 65,535 parameters: %d, %v", n, err)
			}
			var after string
			if err := conn.QueryRow(ctx, "select 'after params'").Scan(&after); err != nil {
				t.Fatalf("pgx, the statement after: %v", err)
			}
			if got := g.pg.QueryInt(t, "select count(*) from customers where length(name) = "+fmt.Sprint(bigLen)); got != 2 {
				t.Fatalf("upstream holds %d rows with the 4 MB name, want 2", got)
			}

			evs := sessionEvents(t, g, func(evs []recorder.Event) bool { return statementWith(evs, "select 'after params'") != nil })
			st := statementWith(evs, "insert into customers (name, email) values ($1, $2)")
			if st == nil || st.Decision != "allow" || len(st.Params) != 2 || st.Params[0].Value != big {
				t.Fatalf("the 4 MB parameter is not recorded whole: %+v", st != nil)
			}
			st = statementWith(evs, "select count(*) from unnest(array[$1,")
			if st == nil || len(st.Params) != 65535 || st.Params[65534].Value != "v65534" {
				t.Fatalf("the 65,535 parameters are not recorded")
			}
			psqlEvs := sessionEvents(t, g, func(evs []recorder.Event) bool { return statementWith(evs, "select 'after big'") != nil })
			st = statementWith(psqlEvs, "insert into customers (name, email) values ('0000000")
			if st == nil || st.Text != "insert into customers (name, email) values ('"+big+"', 'big-psql@example.com')" || st.TextRef == nil {
				t.Fatalf("the 4 MB INSERT is not recorded whole")
			}
			conn.Close(ctx)
			verifyAll(t, g, evs[0].Session)
		})
	}
}

// TestStatementCapPostgres: a statement over recorder.max_statement_bytes
// is refused with SQLSTATE 54000 and a message that names the limit, in a
// Query, a Parse and a Bind; it is recorded by size, SHA-256 and first
// bytes; the session goes on, and verifies.
func TestStatementCapPostgres(t *testing.T) {
	g := startGateway(t, gatewayOptions{Recorder: "  max_statement_bytes: 1048576\n"})
	_, tok := grantFor(t, g, "write")
	over := "select '" + bigText(2<<20) + "' as big"
	out, err := g.psql("agent-1", tok, "demo-pg", over+";\nselect 'after refusal' as check;\n")
	// psql sends the statement with its semicolon.
	sent := over + ";"
	if !strings.Contains(out, fmt.Sprintf("ERROR:  54000: airlock: the Query message's statement is %d bytes, more than recorder.max_statement_bytes (1048576)", len(sent))) ||
		!strings.Contains(out, "after refusal") {
		t.Fatalf("psql over the cap: %v\n%.3000s", err, out)
	}
	conn := connectPgx(t, g, "agent-1", tok)
	ctx := context.Background()
	code := func(err error) string {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return pe.Code + ": " + pe.Message
		}
		return fmt.Sprint(err)
	}
	_, err = conn.Exec(ctx, over+" where $1::int = 1", 1)
	if c := code(err); !strings.HasPrefix(c, "54000: airlock: the Parse message is") || !strings.Contains(c, "recorder.max_statement_bytes (1048576)") {
		t.Fatalf("pgx Parse over the cap: %s", c)
	}
	var s string
	if err := conn.QueryRow(ctx, "select 'after parse'").Scan(&s); err != nil {
		t.Fatalf("after the Parse refusal: %v", err)
	}
	_, err = conn.Exec(ctx, "select length($1::text)", bigText(2<<20))
	if c := code(err); !strings.HasPrefix(c, "54000: airlock: the Bind message is") {
		t.Fatalf("pgx Bind over the cap: %s", c)
	}
	if err := conn.QueryRow(ctx, "select 'after bind'").Scan(&s); err != nil {
		t.Fatalf("after the Bind refusal: %v", err)
	}
	conn.Close(ctx)

	evs := sessionEvents(t, g, func(evs []recorder.Event) bool { return statementWith(evs, "select 'after refusal'") != nil })
	st := statementWith(evs, "select '0000000")
	sum := sha256.Sum256([]byte(sent))
	if st == nil || st.Decision != "deny" || st.Rule != "too-large" || st.TextRef == nil || !st.TextRef.Omitted ||
		st.TextRef.Size != int64(len(sent)) || st.TextRef.SHA256 != hex.EncodeToString(sum[:]) || len(st.Text) > 1024 {
		t.Fatalf("the refusal's record: %+v", st)
	}
	pgxEvs := sessionEvents(t, g, func(evs []recorder.Event) bool { return statementWith(evs, "select 'after bind'") != nil })
	n := 0
	for _, ev := range pgxEvs {
		if ev.Statement != nil && ev.Statement.Rule == "too-large" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d too-large refusals recorded for the Parse and the Bind, want 2", n)
	}
	verifyAll(t, g, evs[0].Session)
}

func TestLargeStatementsMySQL(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true, Recorder: "  param_max_bytes: 8388608\n"})
	g.my.Exec(t, "CREATE TABLE notes (id INT AUTO_INCREMENT PRIMARY KEY, body LONGTEXT NOT NULL)")
	iss := g.grantMySQL("agent-1", t.Name(), "write")
	big := bigText(bigLen)
	out, err := g.mysqlCLI("agent-1", iss.Token, "shop-mysql", "INSERT INTO notes (body) VALUES ('"+big+"');\nSELECT 'after big' AS c;\n")
	if err != nil || !strings.Contains(out, "after big") {
		t.Fatalf("mysql, a 4 MB INSERT and the next statement: %v\n%.2000s", err, out)
	}
	db := g.mysqlDB("agent-1", iss.Token)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "INSERT INTO notes (body) VALUES (?)", big); err != nil {
		t.Fatalf("go driver, a 4 MB parameter: %v", err)
	}
	args := make([]any, 65535)
	for i := range args {
		args[i] = fmt.Sprintf("v%d", i)
	}
	args[0] = "v65534"
	var found int
	if err := conn.QueryRowContext(ctx, "SELECT ? IN ("+placeholders(65534, false)+")", args...).Scan(&found); err != nil || found != 1 {
		t.Fatalf("go driver, 65,535 parameters: %d, %v", found, err)
	}
	var after string
	if err := conn.QueryRowContext(ctx, "SELECT 'after params'").Scan(&after); err != nil {
		t.Fatalf("go driver, the statement after: %v", err)
	}
	conn.Close()
	db.Close()
	if got := g.my.QueryInt(t, fmt.Sprintf("SELECT COUNT(*) FROM notes WHERE LENGTH(body) = %d", bigLen)); got != 2 {
		t.Fatalf("upstream holds %d rows with the 4 MB body, want 2", got)
	}
	evs := sessionEvents(t, g, func(evs []recorder.Event) bool { return statementWith(evs, "SELECT 'after params'") != nil })
	st := statementWith(evs, "INSERT INTO notes (body) VALUES (?)")
	if st == nil || len(st.Params) != 1 || st.Params[0].Value != big {
		t.Fatalf("the 4 MB parameter is not recorded whole")
	}
	st = statementWith(evs, "SELECT ? IN (?,?")
	if st == nil || len(st.Params) != 65535 {
		t.Fatalf("the 65,535 parameters are not recorded")
	}
	cliEvs := sessionEvents(t, g, func(evs []recorder.Event) bool { return statementWith(evs, "SELECT 'after big'") != nil })
	if st := statementWith(cliEvs, "INSERT INTO notes (body) VALUES ('0000000"); st == nil || st.Text != "INSERT INTO notes (body) VALUES ('"+big+"')" || st.TextRef == nil {
		t.Fatalf("the 4 MB INSERT is not recorded whole")
	}
	verifyAll(t, g, evs[0].Session)
}

// TestStatementCapMySQL: over recorder.max_statement_bytes, the mysql
// client and the Go driver get error 1153 with a message that names the
// limit; the refusal is recorded; the session goes on and verifies.
func TestStatementCapMySQL(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true, Recorder: "  max_statement_bytes: 1048576\n"})
	iss := g.grantMySQL("agent-1", t.Name(), "write")
	over := "SELECT '" + bigText(2<<20) + "' AS big"
	out, _ := g.mysqlCLI("agent-1", iss.Token, "shop-mysql", over+";\nSELECT 'after refusal' AS c;\n", "--force")
	if !strings.Contains(out, fmt.Sprintf("ERROR 1153 (08S01) at line 1: airlock: the COM_QUERY statement is %d bytes, more than recorder.max_statement_bytes (1048576)", len(over))) ||
		!strings.Contains(out, "after refusal") {
		t.Fatalf("mysql over the cap:\n%s", out[max(0, len(out)-3000):])
	}
	db := g.mysqlDB("agent-1", iss.Token)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"COM_QUERY", func() error { _, err := conn.ExecContext(ctx, over); return err }},
		{"COM_STMT_PREPARE", func() error { _, err := conn.ExecContext(ctx, over+" WHERE ? = 1", 1); return err }},
		{"COM_STMT_EXECUTE", func() error { _, err := conn.ExecContext(ctx, "SELECT LENGTH(?)", bigText(2<<20)); return err }},
	} {
		err := tc.run()
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1153 || !strings.Contains(me.Message, "recorder.max_statement_bytes (1048576)") {
			t.Fatalf("%s over the cap: %v", tc.name, err)
		}
		var s string
		if err := conn.QueryRowContext(ctx, "SELECT 'after "+tc.name+"'").Scan(&s); err != nil {
			t.Fatalf("after the %s refusal: %v", tc.name, err)
		}
	}
	conn.Close()
	db.Close()
	evs := sessionEvents(t, g, func(evs []recorder.Event) bool { return statementWith(evs, "SELECT 'after refusal'") != nil })
	st := statementWith(evs, "SELECT '0000000")
	sum := sha256.Sum256([]byte(over))
	if st == nil || st.Rule != "too-large" || st.TextRef == nil || !st.TextRef.Omitted || st.TextRef.Size != int64(len(over)) ||
		st.TextRef.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("the refusal's record: %+v", st)
	}
	verifyAll(t, g, evs[0].Session)
}

// TestLargeStatementFailover: a 4 MB INSERT sent as the events stream's
// leader of a 3-node R3 cluster is killed goes out in chunks while the
// stream elects, so its chunks and event take the standby stream (issue 16
// items 4 and 13 together). It runs once, is recorded whole, and the
// session verifies, its chunks read back from both streams; a list shows
// the session without waiting for the events stream to source the
// standby.
func TestLargeStatementFailover(t *testing.T) {
	u := testenv.NewNATSUsers(t)
	c := testenv.StartDeployNATSCluster(t, u)
	g := startGateway(t, gatewayOptions{
		NATSURL: c.URL, NATSCredentials: u.SeedFiles["gateway"], Replicas: 3,
		PublishTimeout: 2 * time.Second,
	})
	js := adminJS(t, c, u)
	_, tok := grantFor(t, g, "write")
	big := bigText(bigLen)
	// Warm the session's path first, then kill the stream's leader and
	// send the statement at once.
	if out, err := g.psql("agent-1", tok, "demo-pg", "select 'before' as check;\n"); err != nil {
		t.Fatalf("psql before the kill: %v\n%s", err, out)
	}
	c.Kill(t, nodeLeading(t, c, js, "AIRLOCK_EVENTS"))
	out, err := g.psql("agent-1", tok, "demo-pg",
		"insert into customers (name, email) values ('"+big+"', 'big-failover@example.com');\nselect 'after big' as check;\n")
	if err != nil || !strings.Contains(out, "INSERT 0 1") || !strings.Contains(out, "after big") {
		t.Fatalf("psql, a 4 MB INSERT while the stream elects: %v\n%.2000s", err, out)
	}
	ended := time.Now()
	if got := g.pg.QueryInt(t, "select count(*) from customers where email = 'big-failover@example.com'"); got != 1 {
		t.Fatalf("upstream holds %d copies of the row, want 1", got)
	}
	// The session is taken from the gateway's log (the last to start):
	// nats-server may take minutes to source the standby after a node is
	// lost (docs/recorder.md, "Losing a node"), and reading one session
	// reads both streams, so it is whole at once. The list must show it
	// too: the session index follows the standby as well.
	ids := startedSessions(g.Log(), "postgres")
	if len(ids) != 2 {
		t.Fatalf("the gateway's log shows %d Postgres sessions started, want 2: %v", len(ids), ids)
	}
	id := ids[1]
	var evs []recorder.Event
	var read, listed time.Duration
	var showErr string
	for deadline := ended.Add(30 * time.Second); (read == 0 || listed == 0) && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if listed == 0 {
			var list []recorder.Summary
			g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
			for _, s := range list {
				if s.Session == id {
					listed = time.Since(ended)
				}
			}
		}
		if read == 0 {
			var d struct{ Events []recorder.Event }
			if _, errs, code := g.CLIRun("rita", "sessions", "show", id); code != 0 {
				showErr = fmt.Sprintf("show exited %d: %s", code, strings.TrimSpace(errs))
				continue
			}
			g.CLIJSON(&d, "rita", "sessions", "show", id)
			showErr = fmt.Sprintf("show read %d events", len(d.Events))
			if statementWith(d.Events, "select 'after big'") != nil {
				evs, read = d.Events, time.Since(ended)
			}
		}
	}
	st := statementWith(evs, "insert into customers (name, email) values ('0000000")
	if st == nil || st.TextRef == nil || st.Text != "insert into customers (name, email) values ('"+big+"', 'big-failover@example.com')" {
		t.Fatalf("the 4 MB INSERT of session %s is not recorded whole (found %v; %s)", id, st != nil, showErr)
	}
	if listed == 0 {
		t.Fatalf("session %s is not listed 30 s after it ended", id)
	}
	t.Logf("after the session ended: listed in %.1fs, read whole in %.1fs", listed.Seconds(), read.Seconds())
	verifyAll(t, g, evs[0].Session)
	if !strings.Contains(g.Log(), "recorder failing over") {
		t.Logf("note: the recorder did not switch to the standby in this run (the election may have been quick)")
	}
}

// startedSessions lists the ids of the sessions of proto that the
// gateway's log says started, in order.
func startedSessions(log, proto string) []string {
	var ids []string
	for _, m := range startedRE.FindAllStringSubmatch(log, -1) {
		if m[1] == proto {
			ids = append(ids, m[2])
		}
	}
	return ids
}

var startedRE = regexp.MustCompile(`msg="session started" proto=(\w+) session=(ses_\w+)`)
