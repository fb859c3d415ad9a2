package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
)

// grantFor creates a pre-approved grant for agent-1 and returns its token.
func grantFor(t *testing.T, g *gateway, access string, extra ...string) (string, string) {
	t.Helper()
	var iss control.Issued
	args := append([]string{"grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", t.Name(), "--access", access}, extra...)
	g.CLIJSON(&iss, "alice", args...)
	return iss.Grant.ID, iss.Token
}

// sessionEvents returns the events of the newest session of agent-1 that
// satisfies keep.
func sessionEvents(t *testing.T, g *gateway, keep func([]recorder.Event) bool) []recorder.Event {
	t.Helper()
	if evs := findSessionEvents(t, g, keep); evs != nil {
		return evs
	}
	t.Fatalf("no session of agent-1 matches")
	return nil
}

// findSessionEvents is sessionEvents that returns nil when no session
// matches, for a test that waits for one.
func findSessionEvents(t *testing.T, g *gateway, keep func([]recorder.Event) bool) []recorder.Event {
	t.Helper()
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
	for _, s := range list {
		var d control.SessionDetail
		g.CLIJSON(&d, "rita", "sessions", "show", s.Session)
		if keep(d.Events) {
			return d.Events
		}
	}
	return nil
}

// TestPostgresCancel: a driver's cancel (pgx on context timeout) and
// psql's Ctrl-C from another process stop a running pg_sleep, through the
// gateway's own backend keys.
func TestPostgresCancel(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "write")
	conn := connectPgx(t, g, "agent-1", tok)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := conn.Exec(ctx, "select pg_sleep(30)")
	var pgErr *pgconn.PgError
	if took := time.Since(start); err == nil || took > 10*time.Second {
		t.Fatalf("pg_sleep(30) with a 1s context: err %v after %v", err, took)
	}
	if errors.As(err, &pgErr) && pgErr.Code != "57014" {
		t.Errorf("cancelled query: %v", err)
	}

	// psql, interrupted by SIGINT as a terminal's Ctrl-C would.
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	cmd := exec.Command("psql", fmt.Sprintf("host=%s port=%s user=agent-1 dbname=demo-pg sslmode=require", host, port), "-X", "-c", "select pg_sleep(30)")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+tok)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("psql still running 10s after SIGINT:\n%s", out)
	}
	if !strings.Contains(out.String(), "canceling statement due to user request") {
		t.Errorf("psql after SIGINT:\n%s", out)
	}
	evs := sessionEvents(t, g, func(evs []recorder.Event) bool {
		for _, e := range evs {
			if e.Statement != nil && e.Statement.Class.Kind == "CANCEL" {
				return true
			}
		}
		return false
	})
	if len(evs) == 0 {
		t.Fatal("cancel not recorded")
	}
}

// TestPostgresOutcomeUnknownAtEnd: a statement still running when the
// client vanishes gets an outcome anyway, on the session's end event:
// forwarded, so executed, with its end unknown.
func TestPostgresOutcomeUnknownAtEnd(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "write") // pg_sleep is not on the read allow-list
	conn := connectPgx(t, g, "agent-1", tok)
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "select pg_sleep(5)")
		done <- err
	}()
	// Once the statement runs upstream (recorded and forwarded: under
	// load that can take longer than any fixed sleep), the client goes.
	for deadline := time.Now().Add(15 * time.Second); g.pg.QueryInt(t, "select count(*) from pg_stat_activity where query = 'select pg_sleep(5)' and state = 'active'") == 0; {
		if time.Now().After(deadline) {
			t.Fatal("pg_sleep(5) did not start upstream within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = conn.PgConn().Conn().Close() // gone, without a Terminate or a cancel
	if err := <-done; err == nil {
		t.Fatal("pg_sleep(5) finished although its connection was closed")
	}
	var evs []recorder.Event
	deadline := time.Now().Add(15 * time.Second)
	for evs == nil {
		evs = findSessionEvents(t, g, func(evs []recorder.Event) bool {
			for _, e := range evs {
				if e.Statement != nil && e.Statement.Text == "select pg_sleep(5)" {
					return evs[len(evs)-1].Type == recorder.TypeSessionEnd
				}
			}
			return false
		})
		if evs == nil && time.Now().After(deadline) {
			var seen []string
			findSessionEvents(t, g, func(evs []recorder.Event) bool {
				for _, e := range evs {
					seen = append(seen, fmt.Sprintf("%d:%s", e.Seq, e.Type))
					if e.Statement != nil {
						seen = append(seen, fmt.Sprintf("%q/%s", e.Statement.Text, e.Statement.Decision))
					}
				}
				seen = append(seen, "|")
				return false
			})
			t.Fatalf("the session did not end: %v", seen)
		}
		if evs == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	var id uint64
	for _, e := range evs {
		if e.Statement != nil && e.Statement.Text == "select pg_sleep(5)" {
			if e.Statement.Decision != "allow" {
				t.Fatalf("pg_sleep(5) was not allowed: %+v", e.Statement)
			}
			id = e.Statement.ID
		}
	}
	end := evs[len(evs)-1]
	for _, r := range end.Outcomes() {
		if r.ID == id {
			if !r.Executed || !strings.HasPrefix(r.Error, "outcome unknown: the session ended (client disconnected)") {
				t.Fatalf("outcome of the interrupted statement: %+v", r)
			}
			return
		}
	}
	t.Fatalf("session.end carries no outcome for statement %d: %+v", id, end.Outcomes())
}

// TestPostgresBoundParameters: the parameters of an extended-protocol
// execution are recorded with it.
func TestPostgresBoundParameters(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "read")
	conn := connectPgx(t, g, "agent-1", tok)
	var n int64
	long := strings.Repeat("é", 1000)
	if err := conn.QueryRow(context.Background(), "select count(*) from orders where status = $1 and $2::text <> $3::text and $4::int > 0", "failed", long, nil, 7).Scan(&n); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	evs := sessionEvents(t, g, func(evs []recorder.Event) bool {
		for _, e := range evs {
			if e.Statement != nil && len(e.Statement.Params) > 0 {
				return true
			}
		}
		return false
	})
	var params []recorder.Param
	for _, e := range evs {
		if e.Statement != nil && len(e.Statement.Params) > 0 {
			params = e.Statement.Params
		}
	}
	if len(params) != 4 || params[0].Value != "failed" || params[0].Format != "text" {
		t.Fatalf("params: %+v", params)
	}
	if p := params[1]; !p.Truncated || p.Size != 2000 || len(p.Value) > 1024 || !strings.HasPrefix(long, p.Value) {
		t.Errorf("long parameter: truncated=%v size=%d len=%d", p.Truncated, p.Size, len(p.Value))
	}
	if !params[2].Null {
		t.Errorf("NULL parameter: %+v", params[2])
	}
	if p := params[3]; p.Format != "base64" && p.Value != "7" {
		t.Errorf("int parameter: %+v", p)
	}
}

// TestPostgresRecordsEachMessageAsSent: the gateway decides and records
// a repeated statement from its read buffer, without copying its text, and
// binds the same portal into the same memory each time (bind.go,
// proxy.ViewOf). Through a pipeline of executions with parameters of
// every length, in text and binary format, and simple queries with
// different constants, allowed and denied, in turn: every statement is
// recorded with its own text, parameters and decision, and a denied one
// stays denied while its allowed twin (the same masked key) stays allowed.
func TestPostgresRecordsEachMessageAsSent(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "read")
	conn := connectPgx(t, g, "agent-1", tok)
	ctx := context.Background()
	pc := conn.PgConn()
	const byID, echo = "select count(*) from orders where id = $1", "select $1::int4, $2::text"
	if _, err := pc.Prepare(ctx, "byid", byID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Prepare(ctx, "echo", echo, []uint32{23, 25}); err != nil {
		t.Fatal(err)
	}
	type stmt struct {
		text, decision string
		params         []string // Type:Format:Value
	}
	var want []stmt
	p := pc.StartPipeline(ctx)
	for i := 1; i <= 40; i++ {
		long := strings.Repeat("é", i*7)
		switch i % 3 {
		case 0:
			p.SendQueryPrepared("byid", [][]byte{[]byte(strconv.Itoa(i))}, nil, nil)
			want = append(want, stmt{byID, "allow", []string{":text:" + strconv.Itoa(i)}})
		case 1:
			bin := binary.BigEndian.AppendUint32(nil, uint32(i*1000))
			p.SendQueryPrepared("echo", [][]byte{bin, []byte(long)}, []int16{1, 0}, nil)
			want = append(want, stmt{echo, "allow", []string{"int4:text:" + strconv.Itoa(i*1000), ":text:" + long}})
		default:
			// Unnamed, so Parse, Bind and Execute each time.
			sql := fmt.Sprintf("select count(*) from orders where $1::text <> '' and id > %d", i)
			p.SendQueryParams(sql, [][]byte{[]byte(long)}, []uint32{25}, nil, nil)
			want = append(want, stmt{sql, "allow", []string{":text:" + long}})
		}
	}
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		r, err := p.GetResults()
		if err != nil {
			t.Fatalf("pipeline: %v", err)
		}
		switch r := r.(type) {
		case *pgconn.ResultReader:
			if res := r.Read(); res.Err != nil {
				t.Fatalf("pipeline: %v", res.Err)
			}
		case *pgconn.PipelineSync:
			done = true
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 12; i++ {
		sel := fmt.Sprintf("select count(*) from orders where id = %d", i*11)
		del := fmt.Sprintf("delete from orders where id = %d", i*11)
		if _, err := pc.Exec(ctx, sel).ReadAll(); err != nil {
			t.Fatalf("%s: %v", sel, err)
		}
		var pe *pgconn.PgError
		if _, err := pc.Exec(ctx, del).ReadAll(); !errors.As(err, &pe) || pe.Code != "42501" {
			t.Fatalf("%s: %v, want a refusal (42501)", del, err)
		}
		want = append(want, stmt{sel, "allow", nil}, stmt{del, "deny", nil})
	}

	// A portal executed twice, with another message between whose body
	// takes the read buffer: the second execution is recorded with the
	// portal's parameters too.
	rc := conn.PgConn().Conn()
	fe := pgproto3.NewFrontend(rc, rc)
	const twice = "select $1::text, generate_series(1, 3)"
	fe.SendParse(&pgproto3.Parse{Query: twice})
	fe.SendBind(&pgproto3.Bind{DestinationPortal: "c1", Parameters: [][]byte{[]byte("portal-value")}})
	fe.SendExecute(&pgproto3.Execute{Portal: "c1", MaxRows: 1})
	fe.SendParse(&pgproto3.Parse{Name: "other", Query: "select 1 /* " + strings.Repeat("x", 4000) + " */"})
	fe.SendExecute(&pgproto3.Execute{Portal: "c1"})
	fe.SendSync(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = rc.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("portal executed twice: %s %s", e.Code, e.Message)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	want = append(want, stmt{twice, "allow", []string{":text:portal-value"}}, stmt{twice, "allow", []string{":text:portal-value"}})
	conn.Close(ctx)

	recorded := func(evs []recorder.Event) []stmt {
		var got []stmt
		for _, e := range evs {
			st := e.Statement
			if st == nil || !strings.Contains(st.Text, "orders") && !strings.Contains(st.Text, "$1::") {
				continue
			}
			s := stmt{text: st.Text, decision: st.Decision}
			for _, p := range st.Params {
				s.params = append(s.params, p.Type+":"+p.Format+":"+p.Value)
			}
			got = append(got, s)
		}
		return got
	}
	evs := sessionEvents(t, g, func(evs []recorder.Event) bool { return len(recorded(evs)) >= len(want) })
	got := recorded(evs)
	if len(got) != len(want) {
		t.Fatalf("%d statements recorded, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].text != want[i].text || got[i].decision != want[i].decision || !slices.Equal(got[i].params, want[i].params) {
			t.Errorf("statement %d recorded as %+v, want %+v", i+1, got[i], want[i])
		}
	}
}

// TestPostgresLargeResultStreams: a 1 GiB result passes through with the
// gateway's resident memory growing by less than 50 MB.
func TestPostgresLargeResultStreams(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "read")
	conn := connectPgx(t, g, "agent-1", tok)
	pid := g.PID()
	// Reset the peak so it measures this query only.
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	before := procStatusKB(t, pid, "VmRSS")
	const rows, width = 1 << 20, 1024
	res := conn.PgConn().Exec(context.Background(), fmt.Sprintf("select repeat('x', %d) from generate_series(1, %d)", width, rows))
	var got, bytes int64
	for res.NextResult() {
		rr := res.ResultReader()
		for rr.NextRow() {
			got++
			bytes += int64(len(rr.Values()[0]))
		}
		if _, err := rr.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := res.Close(); err != nil {
		t.Fatal(err)
	}
	if got != rows || bytes != rows*width {
		t.Fatalf("read %d rows, %d bytes", got, bytes)
	}
	peak := procStatusKB(t, pid, "VmHWM")
	growthMB := float64(peak-before) / 1024
	t.Logf("1 GiB result: gateway RSS before %d kB, peak %d kB, growth %.1f MB", before, peak, growthMB)
	if growthMB > 50 {
		t.Errorf("gateway memory grew by %.1f MB for a streamed result", growthMB)
	}

	// The gateway's client writer grows while a result streams and shrinks
	// after it: results of alternating sizes keep every row, in order.
	for _, n := range []int{3000, 1, 5000, 2, 700} {
		rows, err := conn.Query(context.Background(), "select i, repeat('y', 500) from generate_series(1, $1) i", n)
		if err != nil {
			t.Fatal(err)
		}
		want := 1
		for rows.Next() {
			var i int
			var pad string
			if err := rows.Scan(&i, &pad); err != nil {
				t.Fatal(err)
			}
			if i != want || len(pad) != 500 {
				t.Fatalf("result of %d rows: row %d is %d (%d bytes)", n, want, i, len(pad))
			}
			want++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if want-1 != n {
			t.Fatalf("result of %d rows: got %d", n, want-1)
		}
	}
}

func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestPostgresMalformedInput: malformed and truncated input gets a
// protocol error and a closed connection; the gateway keeps serving and
// the attempt is recorded.
func TestPostgresMalformedInput(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "read")

	raw := func(payload []byte) string {
		t.Helper()
		c, err := net.DialTimeout("tcp", g.PostgresAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(c)
		return string(b)
	}
	huge := binary.BigEndian.AppendUint32(nil, 0x7ffffff0)
	for name, payload := range map[string][]byte{
		"absurd startup length": append(huge, 0, 3, 0, 0),
		"http request":          []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"short startup":         {0, 0, 0, 2},
	} {
		if out := raw(payload); !strings.Contains(out, "08P01") {
			t.Errorf("%s: got %q, want a protocol violation error", name, out)
		}
	}
	// A protocol version the gateway does not speak: the server's answer.
	if out := raw([]byte{0, 0, 0, 8, 0, 9, 0, 0}); !strings.Contains(out, "0A000") || !strings.Contains(out, "unsupported frontend protocol 9.0") {
		t.Errorf("unknown protocol: got %q, want 0A000", out)
	}

	// Inside an authenticated session: an absurd length and an unknown
	// message type.
	for name, frame := range map[string][]byte{
		"absurd message length": append([]byte{'Q'}, huge...),
		"unknown message type":  {'z', 0, 0, 0, 4},
		"truncated query":       {'Q', 0, 0, 0, 9, 's', 'e', 'l'},
	} {
		conn := connectPgx(t, g, "agent-1", tok)
		hc, err := conn.PgConn().Hijack()
		if err != nil {
			t.Fatal(err)
		}
		_ = hc.Conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := hc.Conn.Write(frame); err != nil {
			t.Fatal(err)
		}
		// A truncated message's rest never comes: the client hangs up
		// mid-message, and the gateway must simply end the session.
		if name != "truncated query" {
			b, _ := io.ReadAll(bufio.NewReader(hc.Conn))
			if !strings.Contains(string(b), "08P01") {
				t.Errorf("%s: got %q", name, b)
			}
		}
		hc.Conn.Close()
	}
	if out, err := g.psql("agent-1", tok, "demo-pg", "select 'alive';", "-At"); err != nil || strings.TrimSpace(out) != "alive" {
		t.Fatalf("gateway after malformed input: %v\n%s", err, out)
	}
	// The violations inside sessions are recorded as refused messages.
	sessionEvents(t, g, func(evs []recorder.Event) bool {
		for _, e := range evs {
			if e.Statement != nil && e.Statement.Rule == "protocol" && e.Statement.Decision == "deny" {
				return true
			}
		}
		return false
	})
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list")
	failed := 0
	for _, s := range list {
		if s.Status == "auth.failed" {
			failed++
		}
	}
	if failed < 3 {
		t.Errorf("malformed startups recorded: %d auth.failed sessions, want at least 3", failed)
	}
}

// TestPostgresDirectTLS: PostgreSQL 17's direct TLS (no SSLRequest, ALPN
// "postgresql") works; plaintext is refused with a clear error.
func TestPostgresDirectTLS(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, tok := grantFor(t, g, "read")
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%s user=agent-1 password=%s dbname=demo-pg sslmode=require sslnegotiation=direct", host, port, tok))
	if err != nil {
		t.Fatalf("direct TLS: %v", err)
	}
	res, err := conn.Exec(ctx, "select 'direct'").ReadAll()
	if err != nil || len(res) != 1 || string(res[0].Rows[0][0]) != "direct" {
		t.Fatalf("query over direct TLS: %v %+v", err, res)
	}
	conn.Close(ctx)

	_, err = pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%s user=agent-1 password=%s dbname=demo-pg sslmode=disable", host, port, tok))
	if err == nil || !strings.Contains(err.Error(), "requires TLS") {
		t.Fatalf("plaintext: %v", err)
	}
}

// TestPostgresListenNotify: notifications reach a listening client through
// the gateway as they arrive, between its own statements.
func TestPostgresListenNotify(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	_, readTok := grantFor(t, g, "read")
	_, writeTok := grantFor(t, g, "write")
	listener := connectPgx(t, g, "agent-1", readTok)
	notifier := connectPgx(t, g, "agent-1", writeTok)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := listener.Exec(ctx, "listen airlock_events"); err != nil {
		t.Fatal(err)
	}
	if _, err := notifier.Exec(ctx, "notify airlock_events, 'hello'"); err != nil {
		t.Fatal(err)
	}
	n, err := listener.WaitForNotification(ctx)
	if err != nil || n.Channel != "airlock_events" || n.Payload != "hello" {
		t.Fatalf("notification: %+v, %v", n, err)
	}
	if n.PID == listener.PgConn().PID() {
		t.Fatalf("another session's notification carries the listener's own pid %d", n.PID)
	}
	// A session's own notification carries the pid it was given
	// (BackendKeyData), not the upstream backend's.
	if _, err := notifier.Exec(ctx, "listen airlock_events"); err != nil {
		t.Fatal(err)
	}
	if _, err := notifier.Exec(ctx, "notify airlock_events, 'self'"); err != nil {
		t.Fatal(err)
	}
	own, err := notifier.WaitForNotification(ctx)
	if err != nil || own.Payload != "self" || own.PID != notifier.PgConn().PID() {
		t.Fatalf("own notification: %+v (session pid %d), %v", own, notifier.PgConn().PID(), err)
	}
	// NOTIFY writes: a read grant may listen but not notify.
	if _, err := listener.Exec(ctx, "notify airlock_events, 'nope'"); err == nil || !strings.Contains(err.Error(), "42501") {
		t.Fatalf("notify under read: %v", err)
	}
}
