package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	airlockmcp "github.com/airlockhq/airlock/control/mcp"
	"github.com/airlockhq/airlock/recorder"
)

// mcpStdio runs `airlock mcp` as identity and connects the SDK's own
// client to it over stdio.
func (g *gateway) mcpStdio(t *testing.T, identity string) *mcp.ClientSession {
	t.Helper()
	// The process lives as long as the session; cs.Close ends it.
	cmd := g.Command(context.Background(), identity, "mcp")
	cmd.Stderr = g.LogWriter()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: "airlock-e2e", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connecting to airlock mcp: %v", err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// bearer adds an Authorization header to every request.
type bearer struct {
	tok string
	rt  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return b.rt.RoundTrip(r)
}

// mcpHTTP connects the SDK's client to the gateway's /mcp as identity.
func (g *gateway) mcpHTTP(t *testing.T, identity string) (*mcp.ClientSession, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := mcp.NewClient(&mcp.Implementation{Name: "airlock-e2e", Version: "1"}, nil)
	tr := &mcp.StreamableClientTransport{
		Endpoint:   g.URL + "/mcp",
		HTTPClient: &http.Client{Transport: bearer{g.Tokens[identity], http.DefaultTransport}},
		MaxRetries: -1,
	}
	cs, err := c.Connect(ctx, tr, nil)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs, nil
}

// call calls a tool; ok says whether it must succeed (or fail: IsError).
// It returns the structured result decoded into out (on success) or the
// error text.
func call(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any, ok bool, out any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s: protocol error: %v", tool, err)
	}
	var text strings.Builder
	for _, c := range res.Content {
		if tc, isText := c.(*mcp.TextContent); isText {
			text.WriteString(tc.Text)
		}
	}
	if res.IsError == ok {
		t.Fatalf("%s(%v): IsError=%v, want %v: %s", tool, args, res.IsError, !ok, text.String())
	}
	if ok && out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: structured result %s: %v", tool, b, err)
		}
	}
	return text.String()
}

// mcpGrant asks for access through MCP, has alice approve it with the CLI
// while wait_for_grant waits, and returns the grant id.
func mcpGrant(t *testing.T, g *gateway, cs *mcp.ClientSession, args map[string]any) string {
	t.Helper()
	var req airlockmcp.RequestAccessOutput
	call(t, cs, "request_access", args, true, &req)
	if req.State != "pending" || !strings.HasPrefix(req.RequestID, "gr_") {
		t.Fatalf("request_access: %+v", req)
	}
	type waited struct {
		out  airlockmcp.GrantOutput
		took time.Duration
	}
	done := make(chan waited, 1)
	go func() {
		start := time.Now()
		var out airlockmcp.GrantOutput
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "wait_for_grant", Arguments: map[string]any{"id": req.RequestID, "timeout": "40s"}})
		if err == nil && !res.IsError {
			b, _ := json.Marshal(res.StructuredContent)
			_ = json.Unmarshal(b, &out)
		}
		done <- waited{out, time.Since(start)}
	}()
	time.Sleep(700 * time.Millisecond)
	g.MustCLI("alice", "grants", "approve", req.RequestID, "--comment", "ok for the incident")
	w := <-done
	if w.out.State != "active" || w.out.DecidedBy != "alice" || w.out.Reason != "ok for the incident" || w.took < 500*time.Millisecond {
		t.Fatalf("wait_for_grant: %+v after %s", w.out, w.took)
	}
	return req.RequestID
}

// mcpPostgresFlow drives list_resources, request_access, wait_for_grant,
// query (rows back, parameters, a transaction over two calls), a refused
// write (a tool error with the gateway's reason and SQLSTATE) and
// end_session, and checks the session's record.
func mcpPostgresFlow(t *testing.T, g *gateway, cs *mcp.ClientSession, task string) (grant string) {
	var rs airlockmcp.ListResourcesOutput
	call(t, cs, "list_resources", nil, true, &rs)
	found := false
	for _, r := range rs.Resources {
		if r.Name == "demo-pg" && r.Protocol == "postgres" && r.Address == g.PostgresAddr {
			found = true
		}
	}
	if !found {
		t.Fatalf("list_resources lacks demo-pg at %s: %+v", g.PostgresAddr, rs)
	}
	id := mcpGrant(t, g, cs, map[string]any{"resource": "demo-pg", "task": task, "access": "read", "duration": "10m"})

	var q airlockmcp.QueryOutput
	call(t, cs, "query", map[string]any{"grant": id, "sql": "select id, status, amount from orders where id <= $1 order by id", "params": []any{3}}, true, &q)
	if len(q.Rows) != 3 || len(q.Columns) != 3 || q.Columns[0].Name != "id" || q.Columns[0].Type != "int4" || q.Columns[2].Type != "numeric" ||
		q.Truncated || q.Tag != "SELECT 3" {
		t.Fatalf("query: %+v", q)
	}
	call(t, cs, "query", map[string]any{"grant": id, "sql": "select id from orders order by id", "max_rows": 5}, true, &q)
	if len(q.Rows) != 5 || !q.Truncated || q.Tag != "SELECT 200" {
		t.Errorf("max_rows 5: %d rows, truncated %v, tag %q", len(q.Rows), q.Truncated, q.Tag)
	}
	// One connection per grant: session state carries over calls.
	call(t, cs, "query", map[string]any{"grant": id, "sql": "set application_name = 'mcp-e2e'"}, true, &q)
	call(t, cs, "query", map[string]any{"grant": id, "sql": "select current_setting('application_name')"}, true, &q)
	if len(q.Rows) != 1 || q.Rows[0][0] != "mcp-e2e" {
		t.Errorf("the second call ran on another connection: %+v", q)
	}

	msg := call(t, cs, "query", map[string]any{"grant": id, "sql": "delete from orders where id = 1"}, false, nil)
	if !strings.Contains(msg, "42501") || !strings.Contains(msg, "airlock") || !strings.Contains(msg, "read") {
		t.Errorf("refused delete: %q", msg)
	}
	// The session goes on after a refusal.
	call(t, cs, "query", map[string]any{"grant": id, "sql": "select count(*) from orders"}, true, &q)
	if len(q.Rows) != 1 || q.Rows[0][0] != float64(200) {
		t.Errorf("count after the refusal (the delete must not have run): %+v", q)
	}
	var end airlockmcp.EndSessionOutput
	call(t, cs, "end_session", map[string]any{"grant": id}, true, &end)
	if !end.Closed {
		t.Errorf("end_session: %+v", end)
	}
	if msg := call(t, cs, "query", map[string]any{"grant": "gr_nosuchgrant", "sql": "select 1"}, false, nil); !strings.Contains(msg, "no grant") {
		t.Errorf("unknown grant: %q", msg)
	}

	// Recorded as any psql session: on the grant, statement by statement,
	// the refusal with its rule and reason.
	d := g.lastSession("demo-pg")
	if d.Summary.Grant != id {
		t.Errorf("newest demo-pg session is of grant %s, want %s", d.Summary.Grant, id)
	}
	sts, _ := statements(d.Events)
	var texts []string
	var denied *recorder.Statement
	for _, st := range sts {
		texts = append(texts, st.Text)
		if st.Decision == "deny" {
			denied = st
		}
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{"select id, status, amount from orders where id <= $1 order by id", "delete from orders where id = 1", "select count(*) from orders"} {
		if !strings.Contains(all, want) {
			t.Errorf("record lacks %q:\n%s", want, all)
		}
	}
	if denied == nil || denied.Text != "delete from orders where id = 1" || denied.Rule != "access-level" || denied.Reason == "" {
		t.Errorf("denied statement in the record: %+v", denied)
	}
	for _, st := range sts {
		if strings.Contains(st.Text, "$1") && (len(st.Params) != 1 || st.Params[0].Value != "3") {
			t.Errorf("parameters of %q recorded as %+v", st.Text, st.Params)
		}
	}
	g.MustCLI("rita", "sessions", "verify", d.Summary.Session)
	return id
}

// TestMCPStdio: the SDK's client drives `airlock mcp` over stdio through
// the whole flow against real PostgreSQL, MariaDB and sshd; every query
// and command goes through the gateway's own listeners, so it is
// authorized and recorded as a psql, mysql or ssh one is.
func TestMCPStdio(t *testing.T) {
	g := startGateway(t, gatewayOptions{MySQL: true, SSH: true})
	cs := g.mcpStdio(t, "agent-1")

	t.Run("postgres", func(t *testing.T) { mcpPostgresFlow(t, g, cs, "INC-70 look at orders over MCP") })

	t.Run("mysql", func(t *testing.T) {
		id := mcpGrant(t, g, cs, map[string]any{"resource": "shop-mysql", "task": "INC-71 orders over MCP", "access": "read"})
		var q airlockmcp.QueryOutput
		call(t, cs, "query", map[string]any{"grant": id, "sql": "select id, status from orders where id <= ? order by id", "params": []any{2}}, true, &q)
		if len(q.Rows) != 2 || len(q.Columns) != 2 || q.Columns[0].Name != "id" || q.Columns[1].Type == "" {
			t.Fatalf("query: %+v", q)
		}
		msg := call(t, cs, "query", map[string]any{"grant": id, "sql": "delete from orders where id = 1"}, false, nil)
		if !strings.Contains(msg, "ERROR 1142") || !strings.Contains(msg, "airlock") {
			t.Errorf("refused delete: %q", msg)
		}
		call(t, cs, "query", map[string]any{"grant": id, "sql": "select count(*) from orders"}, true, &q)
		if len(q.Rows) != 1 {
			t.Errorf("count: %+v", q)
		}
		call(t, cs, "end_session", map[string]any{"grant": id}, true, nil)
		d := g.lastSession("shop-mysql")
		sts, _ := statements(d.Events)
		var denied int
		for _, st := range sts {
			if st.Decision == "deny" && st.Text == "delete from orders where id = 1" {
				denied++
			}
		}
		if d.Summary.Grant != id || denied != 1 {
			t.Errorf("mysql record: grant %s (want %s), %d denied deletes: %+v", d.Summary.Grant, id, denied, sts)
		}
	})

	t.Run("ssh", func(t *testing.T) {
		id := mcpGrant(t, g, cs, map[string]any{"resource": "box", "task": "INC-72 check the box over MCP", "commands": []string{"echo *"}})
		var r airlockmcp.RunCommandOutput
		call(t, cs, "run_command", map[string]any{"grant": id, "argv": []string{"echo", "it's from mcp"}}, true, &r)
		if r.Stdout != "it's from mcp\n" || r.ExitStatus != 0 {
			t.Fatalf("run_command echo: %+v", r)
		}
		call(t, cs, "run_command", map[string]any{"grant": id, "argv": []string{"uname", "-a"}}, true, &r)
		if r.ExitStatus != 126 || !strings.Contains(r.Stderr, "matches no --command rule") || r.Stdout != "" {
			t.Errorf("refused command: %+v", r)
		}
		if msg := call(t, cs, "query", map[string]any{"grant": id, "sql": "select 1"}, false, nil); !strings.Contains(msg, "use run_command") {
			t.Errorf("query on an ssh grant: %q", msg)
		}
		call(t, cs, "end_session", map[string]any{"grant": id}, true, nil)
		d := g.lastSession("box")
		st, _ := findStatement(t, d.Events, "EXEC", "from mcp")
		if st.Decision != "allow" || d.Summary.Grant != id {
			t.Errorf("ssh record: %+v (grant %s)", st, d.Summary.Grant)
		}
		st, _ = findStatement(t, d.Events, "EXEC", "uname -a")
		if st.Decision != "deny" {
			t.Errorf("refused command recorded as %+v", st)
		}
	})
}

// TestMCPHTTP: the API listener serves MCP at /mcp to an agent's bearer
// token, with the same flow; no token, an unknown one and a non-agent's
// are refused.
func TestMCPHTTP(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	for _, c := range []struct {
		tok  string
		want int
	}{{"", http.StatusUnauthorized}, {"not-a-token", http.StatusUnauthorized}, {g.Tokens["rita"], http.StatusForbidden}} {
		req, _ := http.NewRequest("POST", g.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if c.tok != "" {
			req.Header.Set("Authorization", "Bearer "+c.tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("POST /mcp with token %q: %s, want %d", c.tok, resp.Status, c.want)
		}
	}
	cs, err := g.mcpHTTP(t, "agent-1")
	if err != nil {
		t.Fatalf("connecting to /mcp: %v", err)
	}
	id := mcpPostgresFlow(t, g, cs, "INC-73 look at orders over MCP/HTTP")

	// The MCP session's end closes the connections it holds.
	call(t, cs, "query", map[string]any{"grant": id, "sql": "select 1"}, true, nil)
	before := len(g.sessionsOf("demo-pg"))
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(g.sessionsOf("demo-pg")); n != before {
		t.Fatalf("%d sessions, then %d", before, n)
	}
	if d := g.lastSession("demo-pg"); d.Summary.Grant != id || d.Summary.Status == recorder.StatusOpen {
		t.Errorf("after the MCP session closed: %+v", d.Summary)
	}
}

// TestMCPHold: a query the grant holds makes the tool call wait until a
// person decides: approved, it runs and its result comes back; denied,
// the call fails with the reason; the record reads hold, then the
// decision naming the approver, then the result.
func TestMCPHold(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	cs := g.mcpStdio(t, "agent-1")
	id := mcpGrant(t, g, cs, map[string]any{"resource": "demo-pg", "task": "INC-74 remove two orders over MCP", "access": "write",
		"hold": []string{"DELETE"}, "hold_timeout": "1m"})

	type answer struct {
		q   airlockmcp.QueryOutput
		msg string
		err bool
	}
	run := func(sql string, params ...any) chan answer {
		c := make(chan answer, 1)
		go func() {
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "query", Arguments: map[string]any{"grant": id, "sql": sql, "params": params}})
			if err != nil {
				c <- answer{msg: err.Error(), err: true}
				return
			}
			var a answer
			for _, ct := range res.Content {
				if tc, ok := ct.(*mcp.TextContent); ok {
					a.msg += tc.Text
				}
			}
			a.err = res.IsError
			b, _ := json.Marshal(res.StructuredContent)
			_ = json.Unmarshal(b, &a.q)
			c <- a
		}()
		return c
	}
	done := run("delete from orders where id = $1", 7)
	h := pendingHold(t, g)
	if h.Grant != id || len(h.Statements) != 1 || h.Statements[0].Text != "delete from orders where id = $1" || !slices.Equal(h.Statements[0].Params, []string{"7"}) {
		t.Fatalf("hold: %+v", h)
	}
	select {
	case a := <-done:
		t.Fatalf("the held query returned before anyone decided: %+v", a)
	case <-time.After(300 * time.Millisecond):
	}
	g.MustCLI("alice", "holds", "approve", h.ID, "--comment", "INC-74 ok")
	if a := <-done; a.err || a.q.Tag != "DELETE 1" {
		t.Fatalf("approved held query: %+v", a)
	}

	done = run("delete from orders where id = 8")
	h = pendingHold(t, g)
	g.MustCLI("alice", "holds", "deny", h.ID, "--reason", "keep order 8")
	if a := <-done; !a.err || !strings.Contains(a.msg, "42501") || !strings.Contains(a.msg, "keep order 8") {
		t.Fatalf("denied held query: %+v", a)
	}
	var q airlockmcp.QueryOutput
	call(t, cs, "query", map[string]any{"grant": id, "sql": "select id from orders where id in (7, 8) order by id"}, true, &q)
	if len(q.Rows) != 1 || q.Rows[0][0] != float64(8) {
		t.Errorf("orders 7 and 8 after an approved and a denied delete: %+v", q)
	}
	call(t, cs, "end_session", map[string]any{"grant": id}, true, nil)

	d := g.lastSession("demo-pg")
	sts, _ := statements(d.Events)
	var got []string
	for _, st := range sts {
		if strings.HasPrefix(st.Text, "delete") {
			got = append(got, st.Decision+"/"+st.Rule)
			if st.Rule == "hold-approved" && !strings.Contains(st.Reason, "approved by alice: INC-74 ok") {
				t.Errorf("approved statement's reason: %q", st.Reason)
			}
		}
	}
	if want := []string{"hold/hold-kind", "allow/hold-approved", "hold/hold-kind", "deny/hold-denied"}; !slices.Equal(got, want) {
		t.Errorf("held deletes recorded as %v, want %v", got, want)
	}
	g.MustCLI("rita", "sessions", "verify", d.Summary.Session)
}
