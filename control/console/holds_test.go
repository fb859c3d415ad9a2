package console

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/control"
)

// hostileSQL is statement text an agent controls; the page must show it
// as text.
const hostileSQL = `DELETE FROM orders WHERE note = '</pre><script>alert(1)</script><img src=x onerror=alert(2)>'`

// holdResult is what a session's HoldStore.Wait returned.
type holdResult struct {
	h   *authz.Hold
	err error
}

// hold stores a pending hold as a session would and waits for its
// decision in the background.
func (e *env) hold(wait time.Duration) (*authz.Hold, <-chan holdResult) {
	e.t.Helper()
	now := time.Now().UTC()
	h := &authz.Hold{
		ID: control.NewHoldID(), Session: "se_1", Grant: "gr_1", Agent: "agent-1", Resource: "demo-pg", Task: "INC-5 <b>clean</b>",
		Statements: []authz.HeldStatement{{Text: hostileSQL, Kind: "DELETE", Hold: true, Rule: authz.RuleHoldKind,
			Reason: "DELETE waits for an approver: the grant holds DELETE statements", Params: []string{"<i>42</i>", "NULL"}}},
		Before:    []string{"select count(*) from orders", "begin"},
		CreatedAt: now, ExpiresAt: now.Add(wait),
	}
	done := make(chan holdResult, 1)
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	go func() {
		got, err := e.svc.Holds.Wait(ctx, h)
		done <- holdResult{got, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := e.svc.Holds.Get(context.Background(), h.ID); err == nil {
			return h, done
		}
		if time.Now().After(deadline) {
			e.t.Fatal("the hold was not stored")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitDecided(t *testing.T, done <-chan holdResult) *authz.Hold {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.h
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting session heard of no decision")
		return nil
	}
}

func TestHoldsPageRolesAndEscaping(t *testing.T) {
	e := newEnv(t)
	h, done := e.hold(time.Minute)
	alice, rita, agent := e.signIn("alice-tok"), e.signIn("rita-tok"), e.signIn("agent-tok")

	for _, p := range []string{"/ui/holds", "/ui/holds?part=list"} {
		resp, body := e.get(alice, p)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="hold-`+h.ID+`"`) {
			t.Fatalf("approver GET %s: %s, lists the hold: %v", p, resp.Status, strings.Contains(body, h.ID))
		}
		if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") || strings.Contains(body, "<i>42") || strings.Contains(body, "<b>clean") {
			t.Errorf("%s: agent-controlled text rendered as markup", p)
		}
		for _, want := range []string{
			`<pre class="sql">DELETE FROM orders WHERE note = &#39;&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;`,
			"<code>&lt;i&gt;42&lt;/i&gt;</code>", "<code>NULL</code>", // parameters
			`<pre class="sql">select count(*) from orders</pre>`, // the statements before
			`<code class="rule">hold-kind</code>`, "the grant holds DELETE statements",
			`href="/ui/grants/gr_1"`, "INC-5 &lt;b&gt;clean&lt;/b&gt;",
			`action="/ui/holds/` + h.ID + `/approve"`, `action="/ui/holds/` + h.ID + `/deny"`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %s", p, want)
			}
		}
	}
	// The navigation: an approver sees Holds with its count, the
	// reviewer and the agent no such entry.
	_, body := e.get(alice, "/ui/requests")
	if !strings.Contains(body, `href="/ui/holds"`) {
		t.Error("the approver's navigation has no Holds")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(body, `id="holds-count" title="waiting for a decision">1</span>`) {
		if time.Now().After(deadline) {
			t.Fatal("the navigation does not count the pending hold")
		}
		time.Sleep(50 * time.Millisecond)
		_, body = e.get(alice, "/ui/requests")
	}
	// An approver reads no sessions: the session is named, not linked;
	// an admin gets the link.
	if _, body := e.get(alice, "/ui/holds"); strings.Contains(body, `href="/ui/sessions/se_1"`) {
		t.Error("the approver is sent to a session page it may not open")
	}
	if _, body := e.get(e.signIn("ops-tok"), "/ui/holds"); !strings.Contains(body, `href="/ui/sessions/se_1"`) {
		t.Error("the admin has no link to the session")
	}
	for who, b := range map[string]*http.Client{"reviewer": rita, "agent": agent} {
		if resp, body := e.get(b, "/ui/sessions"); resp.StatusCode != http.StatusOK || strings.Contains(body, "/ui/holds") {
			t.Errorf("the %s's navigation offers holds (%s)", who, resp.Status)
		}
		for _, p := range []string{"/ui/holds", "/ui/holds?part=list"} {
			if resp, body := e.get(b, p); resp.StatusCode != http.StatusForbidden || strings.Contains(body, h.ID) {
				t.Errorf("%s GET %s: %s", who, p, resp.Status)
			}
		}
		for _, a := range []string{"approve", "deny"} {
			if resp := e.post(b, "/ui/holds/"+h.ID+"/"+a, url.Values{"reason": {"x"}, "comment": {"x"}}); resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s POST %s: %s, want 403", who, a, resp.Status)
			}
		}
	}
	// Another site's form: refused before the handler.
	req, _ := http.NewRequest("POST", e.srv.URL+"/ui/holds/"+h.ID+"/approve", strings.NewReader("comment=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := alice.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site approve: %s, want 403", resp.Status)
	}
	if got, _ := e.svc.Holds.Get(context.Background(), h.ID); got.State != authz.HoldPending {
		t.Fatalf("after refused decisions the hold is %s", got.State)
	}
	select {
	case r := <-done:
		t.Fatalf("the session's wait ended: %+v %v", r.h, r.err)
	default:
	}
}

func TestHoldsApproveDenyTwice(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn("alice-tok")
	h, done := e.hold(time.Minute)
	resp := e.post(alice, "/ui/holds/"+h.ID+"/approve", url.Values{"comment": {"INC-5 ok"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/holds?done=approved" {
		t.Fatalf("approve: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if got := waitDecided(t, done); got.State != authz.HoldApproved || got.DecidedBy != "alice" || got.Comment != "INC-5 ok" {
		t.Fatalf("the session heard: %+v", got)
	}
	// A second decision: 409, saying what happened, and the hold among
	// the recently decided.
	r2, body := postBody(e, alice, "/ui/holds/"+h.ID+"/deny", url.Values{"reason": {"too late"}})
	if r2.StatusCode != http.StatusConflict || !strings.Contains(body, "already approved by alice") || !strings.Contains(body, `id="done-`+h.ID+`"`) {
		t.Errorf("second decision: %s\n%s", r2.Status, body)
	}

	h2, done2 := e.hold(time.Minute)
	for _, reason := range []string{"", "   "} {
		if r, body := postBody(e, alice, "/ui/holds/"+h2.ID+"/deny", url.Values{"reason": {reason}}); r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "A reason is required") {
			t.Errorf("deny with reason %q: %s", reason, r.Status)
		}
	}
	if resp := e.post(alice, "/ui/holds/"+h2.ID+"/deny", url.Values{"reason": {"not in business hours"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("deny: %s", resp.Status)
	}
	if got := waitDecided(t, done2); got.State != authz.HoldDenied || got.DecidedBy != "alice" || got.Comment != "not in business hours" {
		t.Fatalf("the session heard: %+v", got)
	}
	if r, _ := postBody(e, alice, "/ui/holds/hold_nosuch/approve", nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("approve an unknown hold: %s", r.Status)
	}
	// An expired hold cannot be approved.
	h3, done3 := e.hold(300 * time.Millisecond)
	waitDecided(t, done3)
	if r, body := postBody(e, alice, "/ui/holds/"+h3.ID+"/approve", nil); r.StatusCode != http.StatusConflict || !strings.Contains(body, "expired") {
		t.Errorf("approve an expired hold: %s", r.Status)
	}
}

// postBody is post that returns the page too.
func postBody(e *env, b *http.Client, path string, form url.Values) (*http.Response, string) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := b.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		sb.WriteString(sc.Text() + "\n")
	}
	return resp, sb.String()
}

// TestHoldsEvents: an approver's stream hears of a new and a decided hold;
// a reviewer's hears nothing of holds.
func TestHoldsEvents(t *testing.T) {
	e := newEnv(t)
	alice, rita := e.signIn("alice-tok"), e.signIn("rita-tok")
	stream := func(b *http.Client) <-chan string {
		req, _ := http.NewRequest("GET", e.srv.URL+"/ui/events", nil)
		resp, err := b.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		lines := make(chan string, 64)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		waitLine(t, lines, ": connected")
		return lines
	}
	al, rl := stream(alice), stream(rita)
	h, done := e.hold(time.Minute)
	waitLine(t, al, "event: holds")
	if _, err := e.svc.Holds.Decide(context.Background(), h.ID, false, "alice", "no"); err != nil {
		t.Fatal(err)
	}
	waitDecided(t, done)
	waitLine(t, al, "event: holds")
	// A grant event after the holds: the reviewer's stream has it, and
	// nothing about holds before it.
	e.request("agent-1", "after the holds", control.GrantSpec{})
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l := <-rl:
			if l == "event: holds" {
				t.Fatal("the reviewer's stream announced a hold")
			}
			if l == "event: grants" {
				return
			}
		case <-timeout:
			t.Fatal("no grants event on the reviewer's stream")
		}
	}
}
