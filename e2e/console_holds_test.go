package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// send writes a line to psql without waiting for anything.
func (p *livePsql) send(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// expect waits for a line of psql's output containing want, and fails on
// one containing any of never first.
func (p *livePsql) expect(t *testing.T, want string, within time.Duration, never ...string) string {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case l := <-p.lines:
			for _, n := range never {
				if strings.Contains(l, n) {
					t.Fatalf("psql printed %q while waiting for %q", l, want)
				}
			}
			if strings.Contains(l, want) {
				return l
			}
		case err := <-p.exited:
			t.Fatalf("psql exited while waiting for %q: %v", want, err)
		case <-timeout:
			t.Fatalf("psql printed no %q within %s", want, within)
		}
	}
}

// quiet fails if psql prints anything but blank lines within d: a held
// statement waits.
func (p *livePsql) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l := <-p.lines:
			if strings.TrimSpace(l) != "" {
				t.Fatalf("psql printed %q while its statement was held", l)
			}
		case err := <-p.exited:
			t.Fatalf("psql exited while its statement was held: %v", err)
		case <-timeout:
			return
		}
	}
}

// newHoldCard waits, without a reload, for a hold card on the holds page
// and returns its hold id.
func newHoldCard(t *testing.T, b context.Context, not string) string {
	t.Helper()
	sel := "article.hold-card"
	if not != "" {
		sel += ":not(#hold-" + not + ")"
	}
	within(t, b, 30*time.Second, "a hold appears live", chromedp.WaitVisible(chromedp.CSS(sel)))
	if !evalJS[bool](t, b, "window.__noReload === true") {
		t.Fatal("the holds page reloaded to show the hold")
	}
	return evalJS[string](t, b, fmt.Sprintf(`document.querySelector(%q).dataset.hold`, sel))
}

// TestConsoleHolds is the approver's path for held statements in a real
// browser: psql's DELETE waits while the holds page shows it live with its
// exact text and context, Approve lets it run (the events read hold,
// allow by the approver, result), Deny with a reason gives psql 42501 with
// the reason and the same session goes on; prepared parameters are shown;
// a decision made with the CLI takes the card away live; a cross-origin
// POST and a reviewer are refused.
func TestConsoleHolds(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	b := testenv.Chromium(t)
	b.Allow("403 (Forbidden)")

	signInByLink(t, b, g.consoleLink("alice").URL)
	within(t, b, 30*time.Second, "holds page", chromedp.Navigate(g.URL+"/ui/holds"), chromedp.WaitVisible(chromedp.ID("no-holds")))
	evalJS[bool](t, b, "window.__noReload = true")

	_, tok := grantFor(t, g, "write", "--hold", "DELETE")
	psql := startPsql(t, g, "agent-1", tok, "demo-pg")
	psql.send(t, `\set VERBOSITY verbose`)
	psql.query(t, "select 'before-' || count(*) from orders;", "before-")
	psql.expect(t, "(1 row)", 5*time.Second)

	// 1. Approve: psql waits while the page shows the hold.
	del1 := "delete from orders where id = 1"
	psql.send(t, del1+";")
	id := newHoldCard(t, b, "")
	card := evalJS[string](t, b, fmt.Sprintf(`document.getElementById("hold-%s").innerText`, id))
	for _, want := range []string{"agent-1", "demo-pg", t.Name(), "delete from orders where id = 1", "DELETE", "hold-kind",
		"the grant holds DELETE statements", "select 'before-' || count(*) from orders"} {
		if !strings.Contains(card, want) {
			t.Errorf("the hold card lacks %q:\n%s", want, card)
		}
	}
	if got := evalJS[string](t, b, fmt.Sprintf(`document.querySelector("#hold-%s pre.sql").textContent`, id)); got != del1 {
		t.Errorf("held statement text %q, want %q exactly", got, del1)
	}
	if n := evalJS[string](t, b, `document.getElementById("holds-count").textContent`); n != "1" {
		t.Errorf("the navigation counts %q pending holds, want 1", n)
	}
	docShot(t, b, "holds.png")
	psql.quiet(t, 500*time.Millisecond)
	within(t, b, 30*time.Second, "approve",
		chromedp.SendKeys(chromedp.CSS("#hold-"+id+" .approve-form textarea"), "INC-9 cleanup"),
		chromedp.Click(chromedp.CSS("#hold-"+id+" button.approve")),
		chromedp.WaitVisible(chromedp.ID("notice")),
	)
	psql.expect(t, "DELETE 1", 15*time.Second, "ERROR")
	within(t, b, 30*time.Second, "approved hold leaves the queue",
		chromedp.WaitNotPresent(chromedp.ID("hold-"+id)), chromedp.WaitVisible(chromedp.ID("done-"+id)))
	if row := evalJS[string](t, b, fmt.Sprintf(`document.getElementById("done-%s").innerText`, id)); !strings.Contains(row, "approved") || !strings.Contains(row, "alice") {
		t.Errorf("recently decided row: %q", row)
	}
	if out, err := g.psql("agent-1", tok, "demo-pg", "select 'left-' || count(*) from orders where id = 1;"); err != nil || !strings.Contains(out, "left-0") {
		t.Fatalf("row 1 after the approved delete: %v\n%s", err, out)
	}
	// 2. Deny with a reason: psql reads 42501 and the reason; the same
	// session goes on.
	evalJS[bool](t, b, "window.__noReload = true")
	psql.send(t, "delete from orders where id = 2;")
	id2 := newHoldCard(t, b, "")
	psql.quiet(t, 300*time.Millisecond)
	within(t, b, 30*time.Second, "deny",
		chromedp.SendKeys(chromedp.CSS("#hold-"+id2+" .deny-form textarea"), "not during business hours"),
		chromedp.Click(chromedp.CSS("#hold-"+id2+" button.deny")),
		chromedp.WaitVisible(chromedp.ID("notice")),
	)
	if l := psql.expect(t, "ERROR", 15*time.Second, "DELETE 1"); !strings.Contains(l, "42501") || !strings.Contains(l, "not during business hours") {
		t.Errorf("psql's error for the denied hold: %q", l)
	}
	psql.query(t, "select 'still-' || count(*) from orders where id = 2;", "still-1")
	// The approval's events: its outcome rides on a later event of the
	// session, so they are read once the session has gone on.
	var steps []string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		steps = heldSteps(t, sessionEvents(t, g, func(evs []recorder.Event) bool {
			return len(heldSteps(t, evs)) > 0
		}))
		if len(steps) >= 3 || time.Now().After(deadline) {
			break
		}
	}
	if got := strings.Join(steps[:min(3, len(steps))], " "); got != "hold/"+authz.RuleHoldKind+" allow/hold-approved result/DELETE 1" {
		t.Errorf("events of the held delete: %v", steps)
	}
	within(t, b, 30*time.Second, "denied hold leaves the queue", chromedp.WaitNotPresent(chromedp.ID("hold-"+id2)))
	if row := evalJS[string](t, b, fmt.Sprintf(`document.getElementById("done-%s").innerText`, id2)); !strings.Contains(row, "denied") || !strings.Contains(row, "not during business hours") {
		t.Errorf("recently decided row: %q", row)
	}

	// 3. A prepared statement's parameters; a live refresh keeps what is
	// being typed; a cross-origin POST refused; a denial from the CLI takes
	// the card away live.
	evalJS[bool](t, b, "window.__noReload = true")
	conn := connectPgx(t, g, "agent-1", tok)
	errc := make(chan error, 1)
	go func() {
		// A text parameter: pgx sends text in text format (a hold keeps a
		// binary one as its base64, without saying so).
		_, err := conn.Exec(context.Background(), "delete from orders where id::text = $1", "3")
		errc <- err
	}()
	id3 := newHoldCard(t, b, "")
	if p := evalJS[string](t, b, fmt.Sprintf(`document.querySelector("#hold-%s ol.params").innerText`, id3)); strings.TrimSpace(p) != "3" {
		t.Errorf("the hold's parameters read %q, want 3", p)
	}
	// A new hold refreshes the list; what the approver typed stays.
	within(t, b, 30*time.Second, "type a reason", chromedp.SendKeys(chromedp.CSS("#hold-"+id3+" .deny-form textarea"), "half-typed"))
	conn2 := connectPgx(t, g, "agent-1", tok)
	errc2 := make(chan error, 1)
	go func() {
		_, err := conn2.Exec(context.Background(), "delete from orders where id = $1", 4)
		errc2 <- err
	}()
	id4 := newHoldCard(t, b, id3)
	if v := evalJS[string](t, b, fmt.Sprintf(`document.querySelector("#hold-%s .deny-form textarea").value`, id3)); v != "half-typed" {
		t.Errorf("after a live refresh the reason being typed reads %q", v)
	}
	if first := evalJS[string](t, b, `document.querySelector("article.hold-card").dataset.hold`); first != id4 {
		t.Errorf("the first card is %s, want the newest hold %s", first, id4)
	}
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/ui/holds/%s/approve"><input name="comment" value="pwned"></form><script>document.getElementById("f").submit()</script>`, g.URL, id3)
	}))
	defer evil.Close()
	within(t, b, 30*time.Second, "cross-origin post", chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if h1 := evalJS[string](t, b, `document.querySelector("main h1").textContent`); h1 != "403" {
		t.Errorf("the cross-origin post answered %q, want the 403 page", h1)
	}
	var h authz.Hold
	g.CLIJSON(&h, "alice", "holds", "show", id3)
	if h.State != authz.HoldPending {
		t.Fatalf("after a cross-origin post the hold is %s", h.State)
	}
	within(t, b, 30*time.Second, "holds page again", chromedp.Navigate(g.URL+"/ui/holds"), chromedp.WaitVisible(chromedp.ID("hold-"+id3)))
	evalJS[bool](t, b, "window.__noReload = true")
	g.MustCLI("alice", "holds", "deny", id3, "--reason", "decided in the CLI")
	within(t, b, 30*time.Second, "a hold decided elsewhere leaves the page", chromedp.WaitNotPresent(chromedp.ID("hold-"+id3)), chromedp.WaitVisible(chromedp.ID("hold-"+id4)))
	if !evalJS[bool](t, b, "window.__noReload === true") {
		t.Fatal("the holds page reloaded")
	}
	if n := evalJS[string](t, b, `document.getElementById("holds-count").textContent`); n != "1" {
		t.Errorf("the navigation counts %q pending holds, want 1", n)
	}
	var pgErr *pgconn.PgError
	if err := <-errc; !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "decided in the CLI") {
		t.Fatalf("the prepared delete denied from the CLI: %v", err)
	}

	// 4. A reviewer: no Holds in the navigation, the page and a decision
	// answer 403, and the hold stays pending.
	within(t, b, 30*time.Second, "sign out", chromedp.Click(chromedp.CSS(`form[action="/ui/signout"] button`)), chromedp.WaitVisible(chromedp.ID("token")))
	within(t, b, 30*time.Second, "reviewer signs in with a token",
		chromedp.SendKeys(chromedp.ID("token"), g.Tokens["rita"]),
		chromedp.Submit(chromedp.ID("token")),
	)
	leftPage(t, b, "/ui/signin")
	if evalJS[bool](t, b, `!!document.querySelector('nav a[href="/ui/holds"]')`) {
		t.Error("the reviewer's navigation offers Holds")
	}
	within(t, b, 30*time.Second, "reviewer opens the holds page", chromedp.Navigate(g.URL+"/ui/holds"), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if h1 := evalJS[string](t, b, `document.querySelector("main h1").textContent`); h1 != "403" {
		t.Errorf("reviewer on the holds page sees %q, want 403", h1)
	}
	if evalJS[bool](t, b, fmt.Sprintf(`document.body.innerText.includes(%q)`, id4)) {
		t.Error("the reviewer's 403 page names the pending hold")
	}
	for _, a := range []string{"approve", "deny"} {
		ctx, cancel := context.WithTimeout(b, 10*time.Second)
		status, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(
			`fetch("/ui/holds/%s/%s", {method: "POST", body: new URLSearchParams({comment: "rita says so", reason: "rita says so"})}).then(r => r.status)`, id4, a), chromedp.EvalAwaitPromise))
		cancel()
		if err != nil || status != http.StatusForbidden {
			t.Errorf("reviewer's %s POST: %d, %v; want 403", a, status, err)
		}
	}
	g.CLIJSON(&h, "alice", "holds", "show", id4)
	if h.State != authz.HoldPending {
		t.Fatalf("after the reviewer's POSTs the hold is %s", h.State)
	}
	g.MustCLI("alice", "holds", "deny", id4, "--reason", "end of test")
	if err := <-errc2; !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("the last held delete: %v", err)
	}
}

// heldSteps are decision/rule of each event of the session's first held
// DELETE (id = 1) and result/tag of its approved run; the approval's
// reason must name the approver and the comment.
func heldSteps(t *testing.T, evs []recorder.Event) []string {
	t.Helper()
	var steps []string
	var approvedID uint64
	for _, e := range evs {
		for _, r := range e.Outcomes() {
			if approvedID != 0 && r.ID == approvedID {
				steps = append(steps, "result/"+r.Tag)
			}
		}
		if st := e.Statement; st != nil && st.Text == "delete from orders where id = 1" {
			steps = append(steps, st.Decision+"/"+st.Rule)
			if st.Rule == "hold-approved" {
				approvedID = st.ID
				if !strings.Contains(st.Reason, "approved by alice") || !strings.Contains(st.Reason, "INC-9 cleanup") {
					t.Errorf("approval event's reason %q does not name the approver and comment", st.Reason)
				}
			}
		}
	}
	return steps
}
