package mcp

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/control"
)

// fakeAPI answers as the gateway's API would; the e2e tests run the real
// one (e2e/mcp_test.go).
type fakeAPI struct {
	mu     sync.Mutex
	states []authz.State // WaitGrant answers these in turn, then the last
	waits  []time.Duration
	spec   control.GrantSpec
}

func (f *fakeAPI) Resources(context.Context) ([]control.Resource, error) {
	return []control.Resource{
		{Name: "demo-pg", Protocol: "postgres", Address: "127.0.0.1:1"},
		{Name: "box", Protocol: "ssh", Address: "127.0.0.1:2"},
		{Name: "nolistener", Protocol: "mysql"},
	}, nil
}

func (f *fakeAPI) Request(_ context.Context, spec control.GrantSpec) (*control.Issued, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if spec.Resource == "billing" {
		return nil, &control.APIError{Status: 400, Msg: `unknown resource "billing"`}
	}
	f.spec = spec
	return &control.Issued{Grant: &authz.Grant{ID: "gr_1" + spec.Resource, Agent: "agent-1", Resource: spec.Resource, State: authz.StatePending}, Token: "secret-token"}, nil
}

func (f *fakeAPI) WaitGrant(_ context.Context, id string, wait time.Duration) (*authz.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waits = append(f.waits, wait)
	st := f.states[0]
	if len(f.states) > 1 {
		f.states = f.states[1:]
	}
	g := &authz.Grant{ID: id, Resource: "demo-pg", State: st}
	if st == authz.StateDenied {
		g.DecidedBy, g.Comment = "alice", "not on Fridays"
	}
	return g, nil
}

// connect runs a Server on in-memory transports and returns the SDK's
// client session to it.
func connect(t *testing.T, api API) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, ct := mcp.NewInMemoryTransports()
	s := New(Options{API: api})
	done := make(chan struct{})
	go func() { _ = s.Run(ctx, st); close(done) }()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close(); cancel(); <-done })
	return cs
}

func callTool(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any, out any) (text string, isError bool) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text += tc.Text
		}
	}
	if !res.IsError && out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatal(err)
		}
	}
	return text, res.IsError
}

func TestTools(t *testing.T) {
	cs := connect(t, &fakeAPI{states: []authz.State{authz.StatePending}})
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	if got := strings.Join(names, ","); got != "end_session,list_resources,query,request_access,run_command,wait_for_grant" {
		t.Errorf("tools: %s", got)
	}
}

func TestRequestAndWait(t *testing.T) {
	api := &fakeAPI{states: []authz.State{authz.StatePending, authz.StatePending, authz.StateDenied}}
	cs := connect(t, api)

	var req RequestAccessOutput
	text, isErr := callTool(t, cs, "request_access", map[string]any{
		"resource": "demo-pg", "task": "INC-1", "access": "write", "duration": "15m", "tables": []string{"public.orders"},
	}, &req)
	if isErr || req.RequestID != "gr_1demo-pg" || req.State != "pending" {
		t.Fatalf("request_access: %+v %s", req, text)
	}
	// The token stays in the server.
	if strings.Contains(text, "secret-token") {
		t.Errorf("request_access returned the token: %s", text)
	}
	if s := api.spec; s.Access != "write" || s.TTL != "15m" || len(s.Scope.Tables) != 1 || s.Scope.Tables[0] != "public.orders" {
		t.Errorf("spec sent: %+v", s)
	}

	// Pending twice, then denied: the wait goes on through the long
	// polls and returns the reason.
	var g GrantOutput
	if text, isErr := callTool(t, cs, "wait_for_grant", map[string]any{"id": req.RequestID, "timeout": "10m"}, &g); isErr {
		t.Fatal(text)
	}
	if g.State != "denied" || g.Reason != "not on Fridays" || g.DecidedBy != "alice" || len(api.waits) != 3 || api.waits[0] != waitSpan {
		t.Errorf("wait_for_grant: %+v after waits %v", g, api.waits)
	}

	// A timeout that passes returns the grant still pending.
	api.states = []authz.State{authz.StatePending}
	callTool(t, cs, "wait_for_grant", map[string]any{"id": req.RequestID, "timeout": "0s"}, &g)
	if g.State != "pending" {
		t.Errorf("timeout 0s: %+v", g)
	}

	for _, c := range []struct {
		tool string
		args map[string]any
		want string
	}{
		{"request_access", map[string]any{"resource": "billing", "task": "x"}, `request refused: unknown resource "billing"`},
		{"wait_for_grant", map[string]any{"id": "gr_x", "timeout": "soon"}, `timeout "soon"`},
		{"query", map[string]any{"grant": "gr_nope", "sql": "select 1"}, `no grant "gr_nope"`},
		{"query", map[string]any{"grant": req.RequestID, "sql": "select 1", "max_rows": -1}, "max_rows -1"},
		{"query", map[string]any{"sql": "select 1"}, `missing properties: ["grant"]`},
		{"run_command", map[string]any{"grant": req.RequestID, "argv": []string{"ls"}}, "use query"},
		{"end_session", map[string]any{"grant": "gr_nope"}, "no grant"},
	} {
		text, isErr := callTool(t, cs, c.tool, c.args, nil)
		if !isErr || !strings.Contains(text, c.want) {
			t.Errorf("%s(%v): error %v %q, want %q", c.tool, c.args, isErr, text, c.want)
		}
	}

	var ssh RequestAccessOutput
	callTool(t, cs, "request_access", map[string]any{"resource": "box", "task": "INC-2", "commands": []string{"uptime"}}, &ssh)
	if text, isErr := callTool(t, cs, "query", map[string]any{"grant": ssh.RequestID, "sql": "select 1"}, nil); !isErr || !strings.Contains(text, "use run_command") {
		t.Errorf("query on an ssh grant: %q", text)
	}
	if text, isErr := callTool(t, cs, "run_command", map[string]any{"grant": ssh.RequestID, "argv": []string{}}, nil); !isErr || !strings.Contains(text, "argv is empty") {
		t.Errorf("empty argv: %q", text)
	}
	var none RequestAccessOutput
	callTool(t, cs, "request_access", map[string]any{"resource": "nolistener", "task": "INC-3"}, &none)
	if text, isErr := callTool(t, cs, "query", map[string]any{"grant": none.RequestID, "sql": "select 1"}, nil); !isErr || !strings.Contains(text, "no listener") {
		t.Errorf("no listener: %q", text)
	}
	var end EndSessionOutput
	if _, isErr := callTool(t, cs, "end_session", map[string]any{"grant": req.RequestID}, &end); isErr || end.Closed {
		t.Errorf("end_session with nothing open: %+v", end)
	}
}

func TestShellQuote(t *testing.T) {
	for _, c := range []struct {
		argv []string
		want string
	}{
		{[]string{"uname", "-a"}, "uname -a"},
		{[]string{"echo", "two words"}, "echo 'two words'"},
		{[]string{"echo", "it's"}, `echo 'it'\''s'`},
		{[]string{"echo", ""}, "echo ''"},
		{[]string{"echo", "$(id)", "*", "a;b"}, `echo '$(id)' '*' 'a;b'`},
		{[]string{"journalctl", "-u", "nginx.service", "--since=1h"}, "journalctl -u nginx.service --since=1h"},
	} {
		if got := shellQuote(c.argv); got != c.want {
			t.Errorf("shellQuote(%q) = %s, want %s", c.argv, got, c.want)
		}
	}
}

func TestPgParamsAndValues(t *testing.T) {
	for _, c := range []struct {
		in   any
		want string
		null bool
	}{
		{nil, "", true}, {"x'y", "x'y", false}, {true, "true", false}, {float64(3), "3", false},
		{1.5, "1.5", false}, {1e21, "1000000000000000000000", false}, {map[string]any{"a": 1.0}, `{"a":1}`, false},
	} {
		b, err := pgParam(c.in)
		if err != nil || string(b) != c.want || (b == nil) != c.null {
			t.Errorf("pgParam(%v) = %q, %v", c.in, b, err)
		}
	}
	g := &grant{types: pgtype.NewMap()}
	for _, c := range []struct {
		oid  uint32
		in   string
		want string // JSON
	}{
		{pgtype.Int8OID, "200", "200"}, {pgtype.Float8OID, "1.5", "1.5"}, {pgtype.Float8OID, "NaN", `"NaN"`},
		{pgtype.BoolOID, "t", "true"}, {pgtype.NumericOID, "12345678901234567890.12", `"12345678901234567890.12"`},
		{pgtype.JSONBOID, `{"a": [1]}`, `{"a":[1]}`}, {pgtype.TextOID, "hi", `"hi"`},
	} {
		b, _ := json.Marshal(g.pgValue(pgconn.FieldDescription{DataTypeOID: c.oid}, []byte(c.in)))
		if string(b) != c.want {
			t.Errorf("pgValue(oid %d, %q) = %s, want %s", c.oid, c.in, b, c.want)
		}
	}
	if v := g.pgValue(pgconn.FieldDescription{DataTypeOID: pgtype.TextOID}, nil); v != nil {
		t.Errorf("NULL: %v", v)
	}
}

func TestCapped(t *testing.T) {
	var c capped
	_, _ = c.Write(make([]byte, maxOutput-1))
	n, err := c.Write([]byte("abc"))
	if n != 3 || err != nil || c.Len() != maxOutput || !c.cut {
		t.Errorf("capped: n %d, len %d, cut %v", n, c.Len(), c.cut)
	}
}
