package console

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
)

// reviewEnv is the console's test env, with helpers to record sessions.
type reviewEnv struct{ *env }

func newReviewEnv(tb testing.TB) *reviewEnv { return &reviewEnv{newEnv(tb)} }

// record writes a session of evs (start and end added) and waits until
// the index lists it.
func (e *reviewEnv) record(id string, meta recorder.Meta, open bool, evs ...recorder.Event) {
	e.t.Helper()
	l := e.rec.Open(id, meta)
	l.Append(recorder.Event{Type: recorder.TypeSessionStart})
	denied := 0
	for _, ev := range evs {
		if ev.Statement != nil && ev.Statement.Decision == "deny" {
			denied++
		}
		l.Append(ev)
	}
	if !open {
		l.Append(recorder.Event{Type: recorder.TypeSessionEnd, End: &recorder.End{Reason: "client closed", Statements: len(evs), Denied: denied}})
	}
	if err := l.Commit(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := e.index.Get(id); ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("session %s not indexed", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func meta(agent string) recorder.Meta {
	return recorder.Meta{Agent: agent, Task: "check the <b>orders</b> report", Grant: "g-" + agent, Approver: "alice",
		Access: "read", Resource: "demo-pg", Protocol: "postgres", Client: "127.0.0.1:50000"}
}

func stmt(id uint64, text, decision string) recorder.Event {
	ev := recorder.Event{Type: recorder.TypeStatement, Statement: &recorder.Statement{
		ID: id, Count: 1, Text: text, Decision: decision, Rule: "access-level",
		Class: authz.Classification{Kind: "SELECT", Required: authz.AccessRead},
	}}
	if decision == "deny" {
		ev.Statement.Rule, ev.Statement.Reason = "access-level", "DELETE needs write access; the grant gives read"
		ev.Statement.Class = authz.Classification{Kind: "DELETE", Required: authz.AccessWrite}
	}
	return ev
}

func TestSessionPages(t *testing.T) {
	e := newReviewEnv(t)
	sel := stmt(1, "SELECT '<script>alert(1)</script>' AS x WHERE id = $1", "allow")
	sel.Statement.Params = []recorder.Param{{Value: "42", Format: "text", Size: 2}}
	e.record("ses_one", meta("agent-1"), false, sel, stmt(2, "DELETE FROM orders", "deny"))
	e.record("ses_two", meta("agent-2"), false, stmt(1, "SELECT 2", "allow"))

	rita := e.signIn("rita-tok")
	resp, body := e.get(rita, "/ui/sessions")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-session="ses_one"`) || !strings.Contains(body, `data-session="ses_two"`) {
		t.Fatalf("reviewer's list: %s\n%s", resp.Status, body)
	}
	_, body = e.get(rita, "/ui/sessions?denied=true")
	if !strings.Contains(body, `data-session="ses_one"`) || strings.Contains(body, `data-session="ses_two"`) {
		t.Errorf("has-denials filter:\n%s", body)
	}
	_, body = e.get(rita, "/ui/sessions?agent=agent-2")
	if strings.Contains(body, `data-session="ses_one"`) || !strings.Contains(body, `data-session="ses_two"`) || !strings.Contains(body, `value="agent-2"`) {
		t.Errorf("agent filter:\n%s", body)
	}
	if resp, body := e.get(rita, "/ui/sessions?state=closed"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `id="filter-error"`) {
		t.Errorf("bad state: %s", resp.Status)
	}

	resp, body = e.get(rita, "/ui/sessions/ses_one")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("session page: %s", resp.Status)
	}
	if strings.Contains(body, "<script>alert") || !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("statement text not escaped:\n%s", body)
	}
	if strings.Contains(body, "<b>orders</b>") || !strings.Contains(body, "&lt;b&gt;orders&lt;/b&gt;") {
		t.Errorf("task not escaped")
	}
	for _, want := range []string{
		`class="stmt denied" id="seq-3"`, "DENIED", "rule <code>access-level</code>", "DELETE needs write access; the grant gives read",
		`data-verify="intact"`, "verify: intact", "<code>42</code>", `href="/ui/sessions/ses_one/export"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("session page lacks %q", want)
		}
	}
	// A database session replays as its transcript in the player.
	if !strings.Contains(body, `data-cast="/ui/sessions/ses_one/cast"`) {
		t.Errorf("a psql session's page has no player")
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "wasm") {
		t.Errorf("a page with a player lacks the player's CSP: %s", csp)
	}

	// The download is the export the CLI verifies.
	resp, body = e.get(rita, "/ui/sessions/ses_one/export")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("export: %s", resp.Status)
	}
	x, err := recorder.ReadExport(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := x.Verify(nil); err != nil || !rep.OK() || rep.Events != 4 {
		t.Errorf("export verifies: %+v %v", rep, err)
	}
	resp, body = e.get(rita, "/ui/sessions/ses_one/cast")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, `{"version":2`) ||
		!strings.Contains(body, "#2 DENIED (rule access-level): DELETE FROM orders") || !strings.Contains(body, "why: DELETE needs write access") {
		t.Errorf("cast of a psql session: %s\n%s", resp.Status, body)
	}
	if resp, _ := e.get(rita, "/ui/sessions/ses_nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown session: %s", resp.Status)
	}
}

func TestSessionRoles(t *testing.T) {
	e := newReviewEnv(t)
	e.record("ses_a1", meta("agent-1"), false, stmt(1, "SELECT 1", "allow"))
	e.record("ses_a2", meta("agent-2"), false, stmt(1, "SELECT 2", "allow"))

	agent := e.signIn("agent-tok")
	resp, body := e.get(agent, "/ui/sessions")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-session="ses_a1"`) || strings.Contains(body, "ses_a2") {
		t.Fatalf("agent's list: %s\n%s", resp.Status, body)
	}
	// Asking for another agent's list gives its own only.
	if _, body := e.get(agent, "/ui/sessions?agent=agent-2"); strings.Contains(body, "ses_a2") {
		t.Errorf("agent filter widened an agent's list")
	}
	if resp, _ := e.get(agent, "/ui/sessions/ses_a1"); resp.StatusCode != http.StatusOK {
		t.Errorf("own session: %s", resp.Status)
	}
	for _, p := range []string{"/ui/sessions/ses_a2", "/ui/sessions/ses_a2/export", "/ui/sessions/ses_a2/cast", "/ui/sessions/ses_a2/live"} {
		resp, body := e.get(agent, p)
		if resp.StatusCode != http.StatusNotFound || strings.Contains(body, "SELECT 2") {
			t.Errorf("agent-1 GET %s: %s, want 404", p, resp.Status)
		}
	}
	// The API answers the same.
	for _, p := range []string{"/v1/sessions/ses_a2", "/v1/sessions/ses_a2/export"} {
		req, _ := http.NewRequest("GET", e.srv.URL+p, nil)
		req.Header.Set("Authorization", "Bearer agent-tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("API %s as agent-1: %s, want 404", p, resp.Status)
		}
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/v1/sessions", nil)
	req.Header.Set("Authorization", "Bearer agent-tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "ses_a1") || strings.Contains(string(b), "ses_a2") {
		t.Errorf("API list as agent-1: %s", b)
	}

	alice := e.signIn("alice-tok")
	if resp, _ := e.get(alice, "/ui/sessions"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("approver's session list: %s, want 403", resp.Status)
	}
	if resp, _ := e.get(alice, "/ui/sessions/ses_a1"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("approver's session page: %s, want 403", resp.Status)
	}
	ops := e.signIn("ops-tok")
	if resp, _ := e.get(ops, "/ui/sessions/ses_a2"); resp.StatusCode != http.StatusOK {
		t.Errorf("admin: %s", resp.Status)
	}
	// Without a sign-in: to the sign-in page.
	if resp, _ := e.get(&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, "/ui/sessions/ses_a1"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("signed out: %s", resp.Status)
	}
}

func TestSessionListPaging(t *testing.T) {
	e := newReviewEnv(t)
	for i := range pageSize + 5 {
		e.record("ses_p"+string(rune('a'+i/26))+string(rune('a'+i%26)), meta("agent-1"), false)
	}
	rita := e.signIn("rita-tok")
	_, body := e.get(rita, "/ui/sessions?agent=agent-1")
	if n := strings.Count(body, "data-session="); n != pageSize {
		t.Fatalf("first page: %d sessions", n)
	}
	i := strings.Index(body, `id="next-page"`)
	if i < 0 {
		t.Fatal("no next page link")
	}
	href := body[strings.LastIndex(body[:i], `href="`)+6:]
	href = strings.ReplaceAll(href[:strings.IndexByte(href, '"')], "&amp;", "&")
	if !strings.Contains(href, "agent=agent-1") || !strings.Contains(href, "cursor=") {
		t.Fatalf("next link %q keeps no filter or cursor", href)
	}
	_, body2 := e.get(rita, href)
	if n := strings.Count(body2, "data-session="); n != 5 || strings.Contains(body2, `id="next-page"`) {
		t.Fatalf("second page: %d sessions", n)
	}
	if _, body := e.get(rita, "/ui/sessions?cursor=junk"); !strings.Contains(body, "not valid any more") {
		t.Errorf("bad cursor not explained")
	}
}

func TestSessionReplay(t *testing.T) {
	e := newReviewEnv(t)
	m := meta("agent-1")
	m.Protocol, m.Resource = "ssh", "web-1"
	shell := recorder.Event{Type: recorder.TypeStatement, Statement: &recorder.Statement{ID: 1, Count: 1, Text: "shell", Decision: "allow", Rule: "shell",
		Class: authz.Classification{Kind: "SHELL"}}}
	e.record("ses_ssh", m, false, shell,
		recorder.Event{Type: recorder.TypeData, Data: &recorder.Data{ID: 1, Stream: "resize", Cols: 100, Rows: 30, Term: "xterm"}},
		recorder.Event{Type: recorder.TypeData, Data: &recorder.Data{ID: 1, Stream: "stdout", Text: "hello from the box\r\n"}})
	rita := e.signIn("rita-tok")
	resp, body := e.get(rita, "/ui/sessions/ses_ssh")
	if !strings.Contains(body, `data-cast="/ui/sessions/ses_ssh/cast"`) || !strings.Contains(body, `data-cols="100"`) || strings.Contains(body, "data-live") {
		t.Fatalf("replay markup:\n%s", body)
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "'wasm-unsafe-eval'") {
		t.Errorf("player page CSP: %s", resp.Header.Get("Content-Security-Policy"))
	}
	resp, body = e.get(rita, "/ui/sessions/ses_ssh/cast")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, `{"version":2,"width":100,"height":30`) || !strings.Contains(body, "hello from the box") {
		t.Fatalf("cast: %s\n%s", resp.Status, body)
	}
}

// TestSessionLive follows an open SSH session as asciinema-player's
// eventsource driver does: a header with the terminal so far, output as
// it is recorded, offline at the end.
func TestSessionLive(t *testing.T) {
	e := newReviewEnv(t)
	m := meta("agent-1")
	m.Protocol, m.Resource = "ssh", "web-1"
	l := e.rec.Open("ses_live", m)
	l.Append(recorder.Event{Type: recorder.TypeSessionStart})
	l.Append(recorder.Event{Type: recorder.TypeStatement, Statement: &recorder.Statement{ID: 1, Count: 1, Text: "shell", Decision: "allow", Rule: "shell",
		Class: authz.Classification{Kind: "SHELL"}}})
	l.Append(recorder.Event{Type: recorder.TypeData, Data: &recorder.Data{ID: 1, Stream: "resize", Cols: 90, Rows: 20}})
	l.Append(recorder.Event{Type: recorder.TypeData, Data: &recorder.Data{ID: 1, Stream: "stdout", Text: "before-follow\r\n"}})
	if err := l.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	rita := e.signIn("rita-tok")
	_, body := e.get(rita, "/ui/sessions/ses_live")
	if !strings.Contains(body, `data-live="/ui/sessions/ses_live/live"`) {
		t.Fatalf("an open session's page has no live source:\n%s", body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/ui/sessions/ses_live/live", nil)
	resp, err := rita.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				lines <- d
			}
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case d, ok := <-lines:
			if !ok {
				t.Fatal("the stream ended early")
			}
			return d
		case <-ctx.Done():
			t.Fatal("no message")
		}
		return ""
	}
	var hdr struct {
		Cols, Rows int
		Time       float64
		Init       string
	}
	if err := json.Unmarshal([]byte(next()), &hdr); err != nil || hdr.Cols != 90 || hdr.Rows != 20 || !strings.Contains(hdr.Init, "before-follow") {
		t.Fatalf("header %+v %v", hdr, err)
	}
	l.Append(recorder.Event{Type: recorder.TypeData, Data: &recorder.Data{ID: 1, Stream: "stdout", Text: "while-following\r\n"}})
	if err := l.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	var ev []any
	if err := json.Unmarshal([]byte(next()), &ev); err != nil || len(ev) != 3 || ev[1] != "o" || ev[2] != "while-following\r\n" {
		t.Fatalf("live output %v %v", ev, err)
	}
	l.Append(recorder.Event{Type: recorder.TypeSessionEnd, End: &recorder.End{Reason: "client closed", Statements: 1}})
	if err := l.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := next(); !strings.Contains(d, `"state":"offline"`) {
		t.Fatalf("after the end: %s", d)
	}
}

// TestAPISessionList pages GET /v1/sessions with the cursor header.
func TestAPISessionList(t *testing.T) {
	e := newReviewEnv(t)
	e.record("ses_x1", meta("agent-1"), false, stmt(1, "DELETE FROM orders", "deny"))
	e.record("ses_x2", meta("agent-2"), false)
	e.record("ses_x3", meta("agent-1"), true)
	get := func(q string) (int, string, []recorder.Summary) {
		t.Helper()
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/sessions?"+q, nil)
		req.Header.Set("Authorization", "Bearer rita-tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ss []recorder.Summary
		_ = json.NewDecoder(resp.Body).Decode(&ss)
		return resp.StatusCode, resp.Header.Get(control.NextCursorHeader), ss
	}
	ids := func(ss []recorder.Summary) string {
		var b []string
		for _, s := range ss {
			b = append(b, s.Session)
		}
		return strings.Join(b, ",")
	}
	code, next, ss := get("limit=2")
	if code != 200 || ids(ss) != "ses_x3,ses_x2" || next == "" {
		t.Fatalf("page 1: %d %q next %q", code, ids(ss), next)
	}
	code, next2, ss := get("limit=2&cursor=" + url.QueryEscape(next))
	if code != 200 || ids(ss) != "ses_x1" || next2 != "" {
		t.Fatalf("page 2: %d %q next %q", code, ids(ss), next2)
	}
	for q, want := range map[string]string{
		"":                           "ses_x3,ses_x2,ses_x1",
		"denied=true":                "ses_x1",
		"state=open":                 "ses_x3",
		"state=ended&agent=agent-1":  "ses_x1",
		"grant=g-agent-2":            "ses_x2",
		"task=ORDERS":                "ses_x3,ses_x2,ses_x1",
		"until=2000-01-01T00:00:00Z": "",
		"since=1h&resource=demo-pg":  "ses_x3,ses_x2,ses_x1",
	} {
		if code, _, ss := get(q); code != 200 || ids(ss) != want {
			t.Errorf("%q: %d %q, want %q", q, code, ids(ss), want)
		}
	}
	for _, q := range []string{"cursor=junk", "state=closed", "denied=maybe", "until=yesterday", "limit=-1"} {
		if code, _, _ := get(q); code != http.StatusBadRequest {
			t.Errorf("%q: %d, want 400", q, code)
		}
	}
}
