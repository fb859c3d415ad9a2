package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
)

const task = "INC-42: count yesterday's failed orders"

// TestPostgresStory walks the story of issue 2 as a new user would: request,
// refused before approval, approve, query, refusals that leave the session
// usable, the reviewer's view, and a revocation that ends the live session.
func TestPostgresStory(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	orders := g.pg.QueryInt(t, "select count(*) from orders")

	// The agent asks for read access and gets a request id and a token.
	var iss control.Issued
	g.CLIJSON(&iss, "agent-1", "request", "--resource", "demo-pg", "--task", task, "--access", "read")
	if iss.Grant.State != "pending" || !strings.HasPrefix(iss.Token, "alk_") || !strings.HasPrefix(iss.Grant.ID, "gr_") {
		t.Fatalf("request returned %+v", iss)
	}
	text := g.MustCLI("agent-1", "request", "--resource", "demo-pg", "--task", "second request")
	if !strings.Contains(text, "request: gr_") || !strings.Contains(text, "token:   alk_") {
		t.Fatalf("request prints no id and token:\n%s", text)
	}

	// Before approval the token does not connect.
	out, err := g.psql("agent-1", iss.Token, "demo-pg", "select 1;")
	if err == nil || !strings.Contains(out, "pending approval") {
		t.Fatalf("connecting before approval: err=%v\n%s", err, out)
	}

	// An agent cannot approve; the approver can.
	if _, err := g.CLI("agent-1", "grants", "approve", iss.Grant.ID); err == nil || !strings.Contains(err.Error(), "approver") {
		t.Fatalf("agent approving its own request: %v", err)
	}
	if out := g.MustCLI("alice", "grants", "approve", iss.Grant.ID); !strings.Contains(out, "active") {
		t.Fatalf("approve printed:\n%s", out)
	}

	out, err = g.psql("agent-1", iss.Token, "demo-pg", "select count(*) from orders;", "-At")
	if err != nil || strings.TrimSpace(out) != fmt.Sprint(orders) {
		t.Fatalf("select count(*) through airlock: err=%v, printed %q, want %d", err, out, orders)
	}

	// Refusals, each leaving the connection usable, in one session.
	script := `select 'first' as marker;
delete from orders;
select 'still usable' as marker;
with d as (delete from orders returning *) select * from d;
select 'after cte' as marker;
begin;
delete from orders;
select 'in failed tx' as marker;
rollback;
select 'after rollback' as marker;
`
	out, err = g.psql("agent-1", iss.Token, "demo-pg", script, "-At")
	if err != nil {
		t.Fatalf("script: %v\n%s", err, out)
	}
	for _, want := range []string{
		"first", "still usable", "after cte", "after rollback",
		"current transaction is aborted",
		"ERROR:  42501: airlock: DELETE requires write access",
		"grant " + iss.Grant.ID,
		"allows read",
		"--access write",
		"inside a WITH clause",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("psql output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "ERROR:  42501"); n != 3 {
		t.Errorf("want 3 refusals, got %d:\n%s", n, out)
	}
	if strings.Contains(out, "in failed tx") {
		t.Errorf("a statement ran in a transaction aborted by a refusal:\n%s", out)
	}

	// All statements of one message are authorized before any runs.
	out, err = g.psql("agent-1", iss.Token, "demo-pg", "", "-c", "select 1; delete from orders")
	if err == nil || !strings.Contains(out, "42501") || !strings.Contains(out, "statement 2 of 2 refused") {
		t.Fatalf("multi-statement message: err=%v\n%s", err, out)
	}
	if got := g.pg.QueryInt(t, "select count(*) from orders"); got != orders {
		t.Fatalf("upstream has %d orders after refused deletes, want %d", got, orders)
	}

	// The reviewer sees the sessions and every statement.
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
	var scriptSession *recorder.Summary
	for i := range list {
		// The script's 10, and the application_name=psql psql asks for
		// when it connects.
		if list[i].Statements == 11 && list[i].Status == "ended" {
			scriptSession = &list[i]
		}
	}
	if scriptSession == nil {
		t.Fatalf("no ended session with 11 statements in:\n%+v", list)
	}
	if scriptSession.Denied != 3 || scriptSession.Task != task || scriptSession.Grant != iss.Grant.ID ||
		scriptSession.Approver != "alice" || scriptSession.Resource != "demo-pg" || !strings.HasPrefix(scriptSession.Client, "127.0.0.1:") {
		t.Errorf("session summary: %+v", scriptSession)
	}
	var d control.SessionDetail
	g.CLIJSON(&d, "rita", "sessions", "show", scriptSession.Session)
	checkScriptEvents(t, d.Events, iss.Grant.ID)
	text = g.MustCLI("rita", "sessions", "show", scriptSession.Session)
	for _, want := range []string{"agent-1", task, iss.Grant.ID, "approved by alice", "DENY", "delete from orders", "requires write access", "1 row,", "session end"} {
		if !strings.Contains(text, want) {
			t.Errorf("sessions show lacks %q:\n%s", want, text)
		}
	}
	// An agent lists its own sessions only (issue 17).
	var own []recorder.Summary
	g.CLIJSON(&own, "agent-1", "sessions", "list")
	for _, s := range own {
		if s.Agent != "agent-1" {
			t.Errorf("agent-1's list holds %s of %s", s.Session, s.Agent)
		}
	}
	var others []recorder.Summary
	g.CLIJSON(&others, "agent-2", "sessions", "list")
	if len(own) == 0 || len(others) != 0 {
		t.Errorf("agent-1 lists %d sessions, agent-2 (none recorded) %d", len(own), len(others))
	}

	// Revoking ends a live connection within a second; the token stops
	// working.
	conn := connectPgx(t, g, "agent-1", iss.Token)
	if _, err := conn.Exec(context.Background(), "select 1"); err != nil {
		t.Fatalf("pgx through airlock: %v", err)
	}
	hc, err := conn.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
	g.MustCLI("alice", "grants", "revoke", iss.Grant.ID)
	revoked := time.Now()
	_ = hc.Conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	rest, err := io.ReadAll(hc.Conn)
	if elapsed := time.Since(revoked); err != nil || elapsed > time.Second {
		t.Fatalf("live connection after revoke: closed after %v, err %v", elapsed, err)
	}
	if !strings.Contains(string(rest), "revoked by alice") {
		t.Errorf("client was not told why: %q", rest)
	}
	out, err = g.psql("agent-1", iss.Token, "demo-pg", "select 1;")
	if err == nil || !strings.Contains(out, "revoked") {
		t.Fatalf("revoked token connects: err=%v\n%s", err, out)
	}
}

// checkScriptEvents checks the recorded events of the script session.
func checkScriptEvents(t *testing.T, evs []recorder.Event, grant string) {
	t.Helper()
	if len(evs) == 0 {
		t.Fatal("no events")
	}
	if evs[0].Type != recorder.TypeSessionStart || evs[len(evs)-1].Type != recorder.TypeSessionEnd {
		t.Errorf("session does not run from start to end: %s .. %s", evs[0].Type, evs[len(evs)-1].Type)
	}
	results := map[uint64]*recorder.Result{}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Errorf("event %d has seq %d", i, e.Seq)
		}
		if e.Agent != "agent-1" || e.Grant != grant || e.Approver != "alice" || e.Task != task || e.Protocol != "postgres" {
			t.Errorf("event %d lacks who and why: %+v", e.Seq, e.Meta)
		}
		for _, r := range e.Outcomes() {
			results[r.ID] = r
		}
	}
	var decisions []string
	for _, e := range evs {
		if e.Statement == nil || isStartupSetting(e.Statement) {
			continue
		}
		st := e.Statement
		decisions = append(decisions, st.Decision+":"+st.Class.Kind)
		switch st.Decision {
		case "allow":
			r := results[st.ID]
			switch {
			case r == nil || !r.Executed:
				t.Errorf("allowed statement %q: result %+v", st.Text, r)
			case strings.Contains(st.Text, "in failed tx"):
				if r.SQLState != "25P02" {
					t.Errorf("statement in the aborted transaction: result %+v", r)
				}
			case st.Class.Kind == "SELECT" && (r.Rows == nil || *r.Rows != 1 || r.Tag != "SELECT 1"):
				t.Errorf("allowed statement %q: result %+v", st.Text, r)
			}
		case "deny":
			if st.Rule == "" || !strings.Contains(st.Reason, "requires write access") {
				t.Errorf("denied statement %q without rule and reason: %+v", st.Text, st)
			}
			if results[st.ID] != nil {
				t.Errorf("denied statement %q has a result", st.Text)
			}
		}
	}
	want := "allow:SELECT deny:DELETE allow:SELECT deny:SELECT allow:SELECT allow:BEGIN deny:DELETE allow:SELECT allow:ROLLBACK allow:SELECT"
	if got := strings.Join(decisions, " "); got != want {
		t.Errorf("decisions: got %s, want %s", got, want)
	}
}

func connectPgx(t *testing.T, g *gateway, user, token string) *pgx.Conn {
	t.Helper()
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=demo-pg sslmode=require", host, port, user, token))
	if err != nil {
		t.Fatalf("pgx connect through airlock: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestPostgresLoginRefusals: a bad token, another agent's token, an expired
// grant; each refused with a clear message and recorded as auth.failed.
func TestPostgresLoginRefusals(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "short task", "--ttl", "8s")
	if iss.Grant.State != "active" || iss.Grant.Approver() != "alice" {
		t.Fatalf("pre-approved grant: %+v", iss.Grant)
	}
	if out, err := g.psql("agent-1", iss.Token, "demo-pg", "select 1;", "-At"); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("pre-approved grant does not work: %v\n%s", err, out)
	}
	cases := []struct {
		name, user, password, db, want string
	}{
		{"bad token", "agent-1", "alk_notarealtoken", "demo-pg", "not the token of any of your grants"},
		{"other agent's token", "agent-2", iss.Token, "demo-pg", "authentication failed for agent-2"},
		{"unknown agent", "mallory", iss.Token, "demo-pg", "not an agent known"},
		{"wrong resource", "agent-1", iss.Token, "other-db", "no resource"},
	}
	for _, c := range cases {
		out, err := g.psql(c.user, c.password, c.db, "select 1;")
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%s: err=%v, want %q in:\n%s", c.name, err, c.want, out)
		}
	}
	live := connectPgx(t, g, "agent-1", iss.Token)
	time.Sleep(time.Until(iss.Grant.ExpiresAt) + 200*time.Millisecond)
	if _, err := live.Exec(context.Background(), "select 1"); err == nil {
		t.Errorf("a session outlived its grant's expiry")
	}
	out, err := g.psql("agent-1", iss.Token, "demo-pg", "select 1;")
	if err == nil || !strings.Contains(out, "expired") {
		t.Errorf("expired grant: err=%v\n%s", err, out)
	}

	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list")
	failed := map[string]bool{}
	for _, s := range list {
		if s.Status == "auth.failed" {
			failed[s.Agent] = true
		}
	}
	for _, a := range []string{"agent-1", "agent-2", "mallory"} {
		if !failed[a] {
			t.Errorf("no auth.failed recorded for %s in %+v", a, list)
		}
	}
	var reasons []string
	for _, s := range list {
		if s.Status == "auth.failed" {
			var d control.SessionDetail
			g.CLIJSON(&d, "rita", "sessions", "show", s.Session)
			for _, e := range d.Events {
				if e.Auth != nil {
					reasons = append(reasons, e.Auth.Reason)
				}
			}
		}
	}
	joined := strings.Join(reasons, "\n")
	for _, want := range []string{"bad-token", "expired", "no-agent"} {
		if !strings.Contains(joined, want) {
			t.Errorf("recorded refusals lack %q:\n%s", want, joined)
		}
	}
}

// TestPostgresRecorderDown: with NATS stopped, a write is refused with the
// recording error and does not run; once NATS is back the same session
// carries on.
func TestPostgresRecorderDown(t *testing.T) {
	g := startGateway(t, gatewayOptions{PublishTimeout: 500 * time.Millisecond})
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-7: fix a customer", "--access", "write")
	conn := connectPgx(t, g, "agent-1", iss.Token)
	ctx := context.Background()
	n := 0
	insert := func() string {
		n++
		return fmt.Sprintf("insert into customers(name, email) values ('Ada', 'ada%d@example.com')", n)
	}
	if _, err := conn.Exec(ctx, insert()); err != nil {
		t.Fatalf("insert with the recorder up: %v", err)
	}
	before := g.pg.QueryInt(t, "select count(*) from customers")

	g.nats.Stop(t)
	start := time.Now()
	_, err := conn.Exec(ctx, insert())
	if err == nil || !strings.Contains(err.Error(), "recording unavailable") {
		t.Fatalf("insert with the recorder down: %v", err)
	}
	if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != "58000" {
		t.Errorf("insert with the recorder down: %v, want SQLSTATE 58000", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("refusal took %v", took)
	}
	if got := g.pg.QueryInt(t, "select count(*) from customers"); got != before {
		t.Fatalf("insert ran unrecorded: %d customers, want %d", got, before)
	}

	g.nats.Start(t)
	g.WaitReady()
	if _, err := conn.Exec(ctx, insert()); err != nil {
		t.Fatalf("insert after the recorder returned, same session: %v", err)
	}
	if got := g.pg.QueryInt(t, "select count(*) from customers"); got != before+1 {
		t.Fatalf("%d customers after recovery, want %d", got, before+1)
	}
	conn.Close(ctx)

	// The refused attempt is in the record: denied (the grant could not be
	// confirmed either) or allowed but not executed.
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
	var found bool
	for _, s := range list {
		var d control.SessionDetail
		g.CLIJSON(&d, "rita", "sessions", "show", s.Session)
		notExecuted := map[uint64]bool{}
		for _, e := range d.Events {
			for _, r := range e.Outcomes() {
				if !r.Executed {
					notExecuted[r.ID] = true
				}
			}
		}
		for _, e := range d.Events {
			if st := e.Statement; st != nil && strings.Contains(st.Text, "ada2@") {
				found = st.Decision == "deny" || notExecuted[st.ID]
			}
		}
	}
	if !found {
		t.Errorf("the refused insert is not in the record")
	}
	// Events republished after the outage keep the chain whole.
	if out, err := g.CLI("rita", "sessions", "verify", "--all"); err != nil {
		t.Errorf("verify after the outage: %v\n%s", err, out)
	}
}

// TestPostgresRevocationReachesReplicas: two gateways share the NATS
// cluster; a revocation made through one ends the session on the other.
func TestPostgresRevocationReachesReplicas(t *testing.T) {
	a := startGateway(t, gatewayOptions{})
	b := startGateway(t, gatewayOptions{ReplicaOf: a})
	var iss control.Issued
	a.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-3: replica check")
	conn := connectPgx(t, b, "agent-1", iss.Token)
	if _, err := conn.Exec(context.Background(), "select 1"); err != nil {
		t.Fatalf("session on replica b: %v", err)
	}
	hc, err := conn.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
	a.MustCLI("alice", "grants", "revoke", iss.Grant.ID)
	revoked := time.Now()
	_ = hc.Conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	rest, err := io.ReadAll(hc.Conn)
	if elapsed := time.Since(revoked); err != nil || elapsed > time.Second || !strings.Contains(string(rest), "revoked") {
		t.Fatalf("session on replica b after revoking on a: closed after %v, err %v, got %q", elapsed, err, rest)
	}
	if out, err := b.psql("agent-1", iss.Token, "demo-pg", "select 1;"); err == nil || !strings.Contains(out, "revoked") {
		t.Fatalf("replica b accepts a revoked token: %v\n%s", err, out)
	}
}
