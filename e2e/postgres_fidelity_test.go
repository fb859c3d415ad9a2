package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
)

// Protocol fidelity of the Postgres listener: what a client sees through
// airlock must be what it sees connected directly, except where airlock
// must differ (docs/postgres.md).

// psqlRun runs psql with a connection string, extra environment and
// arguments, feeding script on stdin; it returns stdout and stderr apart.
func psqlRun(t *testing.T, conn string, env []string, script string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", append([]string{conn, "-X"}, args...)...)
	cmd.Env = append(os.Environ(), append([]string{"PGCONNECT_TIMEOUT=10"}, env...)...)
	cmd.Stdin = strings.NewReader(script)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// airlockConn is the psql connection string to the gateway as agent-1.
func (g *gateway) airlockConn(extra string) string {
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	return strings.TrimSpace(fmt.Sprintf("host=%s port=%s user=agent-1 dbname=demo-pg sslmode=require %s", host, port, extra))
}

// withoutAirlockNote drops the DETAIL line airlock adds to a syntax error,
// which is the one deliberate difference from the server's answer.
func withoutAirlockNote(s string) string {
	var keep []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if strings.HasPrefix(l, "DETAIL:  airlock ") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "")
}

// TestPostgresSyntaxErrors: a statement the parser cannot read is refused
// and recorded, but the client gets what PostgreSQL says about it: SQLSTATE
// 42601 (or the grammar's own code), the server's message and the position,
// so psql prints the same ERROR, LINE and caret lines as connected
// directly; pgx sees the same PgError over the simple and the extended
// protocol, in a pipeline and in a transaction.
func TestPostgresSyntaxErrors(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "write")
	env := []string{"PGPASSWORD=" + tok, "PGCLIENTENCODING=UTF8"}
	direct := g.pg.DSN()

	// One script on stdin: each statement is its own Query message. The
	// whole of stderr must match, but for airlock's note.
	script := `SELEC 1;
select 'é', 'ü' frm orders;
select *
  from orders
  wher id = 1;
begin;
select 1 frm orders;
select 'in failed tx';
rollback;
create assertion a check (true);
select count(*) over (rows between unbounded following and current row) from orders;
select 'after' as marker;
`
	for _, verbosity := range []string{"default", "verbose"} {
		args := []string{"-v", "VERBOSITY=" + verbosity}
		wantOut, wantErr, _ := psqlRun(t, direct, []string{"PGCLIENTENCODING=UTF8"}, script, args...)
		gotOut, gotErr, _ := psqlRun(t, g.airlockConn(""), env, script, args...)
		if !strings.Contains(wantErr, "LINE 3:   wher id = 1;") || !strings.Contains(wantErr, "CREATE ASSERTION is not yet implemented") {
			t.Fatalf("the direct run does not show the errors expected:\n%s", wantErr)
		}
		t.Logf("psql (%s), directly:\n%s\nthrough airlock:\n%s", verbosity, wantErr, gotErr)
		if verbosity == "verbose" {
			// The LOCATION line names the parser's source line, which
			// differs between PostgreSQL versions; routine and file
			// must match.
			wantErr, gotErr = withoutSourceLine(wantErr), withoutSourceLine(gotErr)
		}
		if withoutAirlockNote(gotErr) != wantErr || gotOut != wantOut {
			t.Errorf("psql (%s) through airlock differs from direct.\ndirect stderr:\n%s\nairlock stderr:\n%s\ndirect stdout:\n%s\nairlock stdout:\n%s", verbosity, wantErr, gotErr, wantOut, gotOut)
		}
		if n := strings.Count(gotErr, "DETAIL:  airlock "); n != 6 {
			t.Errorf("psql (%s): %d syntax errors carry airlock's note, want 6:\n%s", verbosity, n, gotErr)
		}
	}
	// Several statements in one Query: the server parses them all first,
	// and so nothing runs; the position counts from the message's start.
	for _, sql := range []string{"select 1; select 2 frm orders", "select 'ü'; selec 'é'", "select 'unterminated"} {
		_, wantErr, _ := psqlRun(t, direct, []string{"PGCLIENTENCODING=UTF8"}, "", "-c", sql)
		_, gotErr, _ := psqlRun(t, g.airlockConn(""), env, "", "-c", sql)
		if withoutAirlockNote(gotErr) != wantErr || !strings.Contains(gotErr, "^") {
			t.Errorf("psql -c %q: direct\n%s\nthrough airlock\n%s", sql, wantErr, gotErr)
		}
	}

	// pgx, over each protocol: the same PgError as the server's.
	ctx := context.Background()
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	viaAirlock := fmt.Sprintf("host=%s port=%s user=agent-1 password=%s dbname=demo-pg sslmode=require", host, port, tok)
	connect := func(dsn string, mode pgx.QueryExecMode) *pgx.Conn {
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = mode
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	pgErr := func(err error) string {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			return fmt.Sprintf("not a PgError: %v", err)
		}
		return fmt.Sprintf("%s %s %s pos=%d hint=%q", pe.SeverityUnlocalized, pe.Code, pe.Message, pe.Position, pe.Hint)
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
		d, a := connect(direct, mode), connect(viaAirlock, mode)
		for _, sql := range []string{"SELEC 1", "select 'é', 'ü' frm orders", "select *\nfrom orders\nwher id = 1", "create assertion a check (true)",
			`select U&'\00'`, `select E'\u00'`, "select 1 limit 1, 2", "select 1; select 2 frm orders", "select 1; select 2"} {
			// pgx sends a statement without arguments as a simple Query
			// whatever the mode; pgconn says which protocol.
			var derr, aerr error
			switch mode {
			case pgx.QueryExecModeSimpleProtocol:
				_, derr = d.PgConn().Exec(ctx, sql).ReadAll()
				_, aerr = a.PgConn().Exec(ctx, sql).ReadAll()
			case pgx.QueryExecModeExec: // unnamed statement
				derr = d.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err
				aerr = a.PgConn().ExecParams(ctx, sql, nil, nil, nil, nil).Read().Err
			default: // a named statement: Parse and Describe, then Sync
				_, derr = d.PgConn().Prepare(ctx, "stmt", sql, nil)
				_, aerr = a.PgConn().Prepare(ctx, "stmt", sql, nil)
				_ = d.PgConn().Deallocate(ctx, "stmt")
				_ = a.PgConn().Deallocate(ctx, "stmt")
			}
			if want, got := pgErr(derr), pgErr(aerr); got != want {
				t.Errorf("%v %q: through airlock %s, directly %s", mode, sql, got, want)
			}
			var pe *pgconn.PgError
			if errors.As(aerr, &pe) && strings.HasPrefix(pe.Code, "42") && !strings.HasPrefix(pe.Detail, "airlock ") {
				t.Errorf("%v %q: no airlock note in DETAIL: %+v", mode, sql, pe)
			}
		}
		// In a transaction: the error aborts it, as the server's would.
		for _, c := range []*pgx.Conn{d, a} {
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// With an argument, so that the extended modes use Parse.
			_, err1 := tx.Exec(ctx, "selec $1::int", 1)
			_, err2 := tx.Exec(ctx, "select $1::int", 1)
			_ = tx.Rollback(ctx)
			if !strings.Contains(pgErr(err1), "42601") || !strings.Contains(pgErr(err2), "25P02") {
				t.Errorf("%v: in a transaction: %s, then %s", mode, pgErr(err1), pgErr(err2))
			}
		}
		// In a pipeline (one Sync for the batch): the same results as
		// directly.
		batch := func(c *pgx.Conn) []string {
			b := &pgx.Batch{}
			b.Queue("select $1::int", 1)
			b.Queue("selec $1::int", 2)
			b.Queue("select $1::int", 3)
			br := c.SendBatch(ctx, b)
			var res []string
			for range 3 {
				_, err := br.Exec()
				if err != nil {
					res = append(res, pgErr(err))
				} else {
					res = append(res, "ok")
				}
			}
			_ = br.Close()
			return res
		}
		if want, got := batch(d), batch(a); !slices.Equal(got, want) {
			t.Errorf("%v: batch through airlock %q, directly %q", mode, got, want)
		}
		var v int
		if err := a.QueryRow(ctx, "select 7").Scan(&v); err != nil || v != 7 {
			t.Errorf("%v: the session is not usable after syntax errors: %v", mode, err)
		}
	}

	// Every syntax error is recorded as a refusal: decision deny, rule
	// unparseable.
	evs := sessionEvents(t, g, func(evs []recorder.Event) bool {
		for _, e := range evs {
			if e.Statement != nil && e.Statement.Text == "SELEC 1" {
				return true
			}
		}
		return false
	})
	for _, e := range evs {
		if e.Statement != nil && e.Statement.Text == "SELEC 1" {
			if e.Statement.Decision != "deny" || e.Statement.Rule != "unparseable" {
				t.Errorf("recorded: %+v", e.Statement)
			}
		}
	}
}

// withoutSourceLine drops the line number from psql's LOCATION lines
// (VERBOSITY=verbose).
func withoutSourceLine(s string) string {
	return regexp.MustCompile(`(?m)^(LOCATION:  \S+, \S+):\d+$`).ReplaceAllString(s, "$1")
}

// TestPostgresUpstreamTerminated: when the server ends the upstream
// connection (pg_terminate_backend from another connection), the client's
// connection is closed at once with the server's FATAL, whether it is idle
// or running a statement, and session.end says the upstream closed it.
func TestPostgresUpstreamTerminated(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "write")
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, g.pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	terminate := func(pid uint32) {
		t.Helper()
		var ok bool
		if err := admin.QueryRow(ctx, "select pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("pg_terminate_backend(%d): %v %v", pid, ok, err)
		}
	}
	upstreamPID := func(c *pgx.Conn) uint32 {
		t.Helper()
		var pid uint32
		if err := c.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return pid
	}

	// Idle: the client reads its connection without sending anything.
	idle := connectPgx(t, g, "agent-1", tok)
	pid := upstreamPID(idle)
	terminate(pid)
	nc := idle.PgConn().Conn()
	_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	start := time.Now()
	b, err := io.ReadAll(nc)
	if err != nil {
		t.Fatalf("idle client: the connection is still open %v after the upstream was terminated (read: %v; got %q)", time.Since(start).Round(time.Millisecond), err, b)
	}
	if !strings.Contains(string(b), "57P01") || !strings.Contains(string(b), "terminating connection due to administrator command") {
		t.Errorf("idle client got %q before the close, want the server's FATAL 57P01", b)
	}

	// Running a statement: it ends at once with the server's error.
	busy := connectPgx(t, g, "agent-1", tok)
	pid2 := upstreamPID(busy)
	done := make(chan error, 1)
	go func() {
		_, err := busy.Exec(ctx, "select pg_sleep(30)")
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	terminate(pid2)
	select {
	case err := <-done:
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57P01" {
			t.Errorf("running statement ended with %v, want the server's 57P01", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pg_sleep(30) still running 5s after its backend was terminated")
	}

	// idle_session_timeout, asked for at connect time: the server ends the
	// idle session (57P05) and the client sees it close.
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=agent-1 password=%s dbname=demo-pg sslmode=require",
		strings.Split(g.PostgresAddr, ":")[0], strings.Split(g.PostgresAddr, ":")[1], tok))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["idle_session_timeout"] = "500"
	timed, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect with idle_session_timeout: %v", err)
	}
	defer timed.Close(ctx)
	nc = timed.PgConn().Conn()
	_ = nc.SetReadDeadline(time.Now().Add(2500 * time.Millisecond))
	b, err = io.ReadAll(nc)
	if err != nil || !strings.Contains(string(b), "57P05") {
		t.Errorf("idle_session_timeout=500: the client read %q, %v; want the server's FATAL 57P05, then the close", b, err)
	}

	// session.end records why.
	for _, sleep := range []bool{false, true} {
		evs := waitSession(t, g, func(evs []recorder.Event) bool {
			slept := false
			for _, e := range evs {
				slept = slept || e.Statement != nil && e.Statement.Text == "select pg_sleep(30)"
			}
			idle := false
			for _, e := range evs {
				idle = idle || e.Statement != nil && strings.Contains(e.Statement.Text, "idle_session_timeout")
			}
			return slept == sleep && !idle && evs[len(evs)-1].Type == recorder.TypeSessionEnd
		})
		end := evs[len(evs)-1].End
		if end == nil || !strings.Contains(end.Reason, "upstream closed the connection") || !strings.Contains(end.Reason, "57P01") ||
			!strings.Contains(end.Reason, "terminating connection due to administrator command") {
			t.Errorf("session (running a statement: %v) ended with %+v, want the upstream's close with its FATAL", sleep, end)
		}
	}
	evs := waitSession(t, g, func(evs []recorder.Event) bool {
		for _, e := range evs {
			if e.Statement != nil && e.Statement.Text == "<startup parameter idle_session_timeout=500>" {
				return evs[len(evs)-1].Type == recorder.TypeSessionEnd
			}
		}
		return false
	})
	if end := evs[len(evs)-1].End; end == nil || !strings.Contains(end.Reason, "upstream closed the connection: FATAL 57P05") {
		t.Errorf("session ended by idle_session_timeout: %+v", end)
	}
}

// waitSession waits up to 15s for a session of agent-1 whose events
// satisfy keep, and returns its events.
func waitSession(t *testing.T, g *gateway, keep func([]recorder.Event) bool) []recorder.Event {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var list []recorder.Summary
		g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
		for _, s := range list {
			var d control.SessionDetail
			g.CLIJSON(&d, "rita", "sessions", "show", s.Session)
			if len(d.Events) > 0 && keep(d.Events) {
				return d.Events
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session of agent-1 matches after 15s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestPostgresStartupParameters: the settings a client asks for when it
// connects (libpq's PGAPPNAME, PGTZ, PGDATESTYLE, PGOPTIONS with -c and
// --name=value and backslash escapes, connection-string parameters; pgx's
// RuntimeParams) take effect through airlock exactly as directly, when the
// grant may SET them; one it may not refuses the connection with a FATAL
// naming it. Both are recorded. A read grant's session is read-only by
// default unless the client asks otherwise.
func TestPostgresStartupParameters(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	readGrant, readTok := grantFor(t, g, "read")
	_, adminTok := grantFor(t, g, "admin")
	direct := fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable", g.pg.Host, g.pg.Port, g.pg.User, g.pg.Password, g.pg.Database)
	const show = `show application_name; show statement_timeout; show lock_timeout; show "TimeZone"; show "DateStyle";
show extra_float_digits; show "IntervalStyle"; show client_encoding; show search_path; show work_mem; select now()::date = current_date;
`
	settingsEnv := []string{"PGAPPNAME=fidelity app", "PGTZ=Asia/Tokyo", "PGDATESTYLE=SQL, DMY", "PGCLIENTENCODING=LATIN1",
		`PGOPTIONS=-c statement_timeout=1234 --lock-timeout=2s -c IntervalStyle=iso_8601 -c application_name=from\ options`}
	cases := []struct {
		name, token, conn string
		env               []string
	}{
		{"libpq environment", readTok, "", settingsEnv},
		{"connection string", readTok, `application_name='conn app' options='-c extra_float_digits=1 -c TimeZone=America/New_York'`, nil},
		{"escaped options", readTok, `options='-capplication_name=two\\ words --statement_timeout=5s'`, nil},
		// search_path and work_mem are not allow-listed settings: an
		// admin grant may SET them, so it may ask for them at connect.
		{"admin settings", adminTok, `options='-c search_path=archive,public -c work_mem=1234kB'`, nil},
	}
	for _, c := range cases {
		want, wantErr, err := psqlRun(t, strings.TrimSpace(direct+" "+c.conn), c.env, show, "-At")
		if err != nil {
			t.Fatalf("%s: direct: %v\n%s", c.name, err, wantErr)
		}
		got, gotErr, err := psqlRun(t, g.airlockConn(c.conn), append([]string{"PGPASSWORD=" + c.token}, c.env...), show, "-At")
		if err != nil || got != want {
			t.Errorf("%s: through airlock (err %v):\n%s%s\ndirectly:\n%s", c.name, err, got, gotErr, want)
		}
	}

	// Refused: a setting the grant may not SET, named in a FATAL.
	for _, c := range []struct {
		name, options, want string
	}{
		{"search_path under read", "-c search_path=evil", "FATAL:  airlock: startup parameter search_path=evil refused: SET requires admin access"},
		{"a custom setting", "--myapp.tenant=7", "FATAL:  airlock: startup parameter myapp.tenant=7 refused"},
		{"an unsupported switch", "-e", "FATAL:  airlock: the startup option -e is not supported"},
	} {
		_, stderr, err := psqlRun(t, g.airlockConn(""), []string{"PGPASSWORD=" + readTok, "PGOPTIONS=" + c.options}, "select 1;")
		if err == nil || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: err %v, want %q in:\n%s", c.name, err, c.want, stderr)
		}
	}
	// What the server itself refuses (a malformed switch, an invalid
	// value) fails as it does directly.
	for _, env := range [][]string{{"PGOPTIONS=-c statement_timeout"}, {"PGTZ=Nowhere/Atlantis"}, {"PGOPTIONS=-c statement_timeout=soon"}} {
		_, wantErr, _ := psqlRun(t, direct, env, "select 1;")
		_, gotErr, err := psqlRun(t, g.airlockConn(""), append([]string{"PGPASSWORD=" + readTok}, env...), "select 1;")
		_, wantFatal, _ := strings.Cut(wantErr, "FATAL:")
		_, gotFatal, _ := strings.Cut(gotErr, "FATAL:")
		if err == nil || wantFatal == "" || gotFatal != wantFatal {
			t.Errorf("%v: through airlock (err %v):\n%s\ndirectly:\n%s", env, err, gotErr, wantErr)
		}
	}

	// pgx's RuntimeParams, and the ParameterStatus messages the client is
	// given: the server's.
	ctx := context.Background()
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	pgxConnect := func(token string, params map[string]string) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=agent-1 password=%s dbname=demo-pg sslmode=require", host, port, token))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range params {
			cfg.RuntimeParams[k] = v
		}
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			t.Cleanup(func() { c.Close(ctx) })
		}
		return c, err
	}
	showValue := func(c *pgx.Conn, name string) string {
		var v string
		if err := c.QueryRow(ctx, "show "+name).Scan(&v); err != nil {
			t.Fatalf("show %s: %v", name, err)
		}
		return v
	}
	c, err := pgxConnect(readTok, map[string]string{"application_name": "pgx-rt", "statement_timeout": "4321", "TimeZone": "Europe/Paris"})
	if err != nil {
		t.Fatalf("pgx with RuntimeParams: %v", err)
	}
	for name, want := range map[string]string{"application_name": "pgx-rt", "statement_timeout": "4321ms", "TimeZone": "Europe/Paris", "default_transaction_read_only": "on"} {
		if got := showValue(c, name); got != want {
			t.Errorf("pgx: show %s = %q, want %q", name, got, want)
		}
	}
	for name, want := range map[string]string{"application_name": "pgx-rt", "TimeZone": "Europe/Paris", "default_transaction_read_only": "on", "standard_conforming_strings": "on"} {
		if got := c.PgConn().ParameterStatus(name); got != want {
			t.Errorf("pgx: ParameterStatus %s = %q, want %q", name, got, want)
		}
	}
	// The read-only default is defence in depth: the authorizer still
	// refuses a write with its own reason, and a client that asks for
	// read-write transactions gets them (every statement still checked).
	if _, err := c.Exec(ctx, "delete from orders where id = 1"); err == nil || !strings.Contains(err.Error(), "42501") {
		t.Errorf("delete under read: %v", err)
	}
	rw, err := pgxConnect(readTok, map[string]string{"default_transaction_read_only": "off"})
	if err != nil {
		t.Fatalf("read grant asking for read-write transactions: %v", err)
	}
	if got := showValue(rw, "default_transaction_read_only"); got != "off" {
		t.Errorf("a read grant's own default_transaction_read_only=off: %q", got)
	}
	_, writeTok := grantFor(t, g, "write")
	wc, err := pgxConnect(writeTok, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := showValue(wc, "default_transaction_read_only"); got != "off" {
		t.Errorf("write grant: default_transaction_read_only = %q", got)
	}
	_, err = pgxConnect(readTok, map[string]string{"application_name": "refused-app", "search_path": "evil"})
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" || pe.Severity != "FATAL" || !strings.Contains(pe.Message, "startup parameter search_path=evil refused") {
		t.Errorf("pgx with search_path under read: %v", err)
	}

	// Recorded: each setting as a statement with its decision, and its
	// outcome; the refused connection's end says why.
	ok := waitSession(t, g, func(evs []recorder.Event) bool {
		for _, e := range evs {
			if e.Statement != nil && e.Statement.Text == "<startup parameter application_name=pgx-rt>" {
				return e.Statement.Decision == "allow" && e.Grant == readGrant
			}
		}
		return false
	})
	executed := false
	for _, e := range ok {
		for _, r := range e.Outcomes() {
			executed = executed || r.Executed && r.Tag == "SET"
		}
	}
	if !executed {
		t.Errorf("the allowed settings have no outcome: %+v", ok)
	}
	refused := waitSession(t, g, func(evs []recorder.Event) bool {
		texts := map[string]bool{}
		for _, e := range evs {
			if e.Statement != nil {
				texts[e.Statement.Text] = true
			}
		}
		return texts["<startup parameter search_path=evil>"] && texts["<startup parameter application_name=refused-app>"] &&
			evs[len(evs)-1].Type == recorder.TypeSessionEnd
	})
	for _, e := range refused {
		switch {
		case e.Statement != nil && e.Statement.Text == "<startup parameter search_path=evil>":
			if e.Statement.Decision != "deny" || e.Statement.Rule != "access-level" {
				t.Errorf("refused setting recorded as %+v", e.Statement)
			}
		case e.Statement != nil:
			if e.Statement.Decision != "deny" || e.Statement.Rule != "batch" {
				t.Errorf("the other setting of a refused connection recorded as %+v", e.Statement)
			}
		case e.End != nil:
			if !strings.Contains(e.End.Reason, "refused at startup") || !strings.Contains(e.End.Reason, "search_path") {
				t.Errorf("refused connection ended with %+v", e.End)
			}
		}
	}
}

// TestPostgresRefusalCodes: each kind of refusal carries the SQLSTATE a
// driver branches on (docs/postgres.md lists them): refused logins as the
// server refuses them, policy 42501, recorder or control plane
// unavailable 58000 (TestPostgresRecorderDown), protocol violations 08P01
// (TestPostgresMalformedInput), a revoked grant FATAL 57P01.
func TestPostgresRefusalCodes(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	grant, tok := grantFor(t, g, "read")
	var pending struct {
		Token string `json:"token"`
	}
	g.CLIJSON(&pending, "agent-1", "request", "--resource", "demo-pg", "--task", "pending", "--access", "read")
	ctx := context.Background()
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	connect := func(user, token, db string, params map[string]string) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s sslmode=require", host, port, user, token, db))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range params {
			cfg.RuntimeParams[k] = v
		}
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			t.Cleanup(func() { c.Close(ctx) })
		}
		return c, err
	}
	code := func(err error) string {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return pe.Severity + " " + pe.Code
		}
		return fmt.Sprint(err)
	}
	for _, c := range []struct {
		name, user, token, db string
		params                map[string]string
		want                  string
	}{
		{"bad token", "agent-1", "alk_wrong", "demo-pg", nil, "FATAL 28P01"},
		{"unknown resource", "agent-1", tok, "no-such-db", nil, "FATAL 3D000"},
		{"unknown agent", "mallory", tok, "demo-pg", nil, "FATAL 28000"},
		{"pending grant", "agent-1", pending.Token, "demo-pg", nil, "FATAL 28000"},
		{"replication", "agent-1", tok, "demo-pg", map[string]string{"replication": "database"}, "FATAL 42501"},
		{"setting the grant may not SET", "agent-1", tok, "demo-pg", map[string]string{"search_path": "x"}, "FATAL 42501"},
	} {
		if _, err := connect(c.user, c.token, c.db, c.params); code(err) != c.want {
			t.Errorf("%s: %v, want %s", c.name, err, c.want)
		}
	}
	conn, err := connect("agent-1", tok, "demo-pg", nil)
	if err != nil {
		t.Fatal(err)
	}
	for sql, want := range map[string]string{"delete from orders where id = 1": "ERROR 42501", "selec 1": "ERROR 42601"} {
		if _, err := conn.Exec(ctx, sql); code(err) != want {
			t.Errorf("%q: %v, want %s", sql, err, want)
		}
	}
	g.MustCLI("alice", "grants", "revoke", grant)
	_ = conn.PgConn().Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(conn.PgConn().Conn())
	if !strings.Contains(string(b), "FATAL") || !strings.Contains(string(b), "57P01") || !strings.Contains(string(b), "revoked by alice") {
		t.Errorf("revoked during the session: the client read %q", b)
	}
}

// isStartupSetting reports whether st records a setting the client asked
// for in its startup message (application_name=psql, ...), rather than a
// statement it sent.
func isStartupSetting(st *recorder.Statement) bool {
	return strings.HasPrefix(st.Text, "<startup parameter ")
}
