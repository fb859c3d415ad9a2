package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/testenv"
)

// consoleLink runs `airlock console --json` as identity.
func (g *gateway) consoleLink(identity string) control.ConsoleLink {
	g.t.Helper()
	var l control.ConsoleLink
	g.CLIJSON(&l, identity, "console")
	if !strings.HasPrefix(l.URL, g.URL+"/ui/signin/") {
		g.t.Fatalf("airlock console printed %q, want a link under %s/ui/signin/", l.URL, g.URL)
	}
	return l
}

// within runs actions with a deadline of their own; the browser outlives
// it.
func within(t *testing.T, b context.Context, d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b, d)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

func evalJS[T any](t *testing.T, b context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("browser: evaluating %s: %v", expr, err)
	}
	return v
}

func location(t *testing.T, b context.Context) string {
	t.Helper()
	return evalJS[string](t, b, "location.pathname + location.search")
}

// signInByLink opens a one-time link and presses Continue.
func signInByLink(t *testing.T, b context.Context, link string) {
	t.Helper()
	within(t, b, 30*time.Second, "sign in by link",
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.ID("continue")),
		chromedp.Click(chromedp.ID("continue")),
	)
	leftPage(t, b, "/ui/signin")
}

// leftPage waits until the browser has loaded a page whose path does not
// start with prefix.
func leftPage(t *testing.T, b context.Context, prefix string) {
	t.Helper()
	waitPage(t, b, fmt.Sprintf(`!location.pathname.startsWith(%q)`, prefix), "still on "+prefix)
}

// waitPage waits until the browser has loaded a page for which the
// JavaScript expression where holds. Evaluating while the page navigates
// fails; that is tried again.
func waitPage(t *testing.T, b context.Context, where, failure string) {
	t.Helper()
	expr := where + ` && document.readyState === "complete"`
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("browser %s after 30s", failure)
}

// docShot takes a screenshot; with AIRLOCK_DOC_SCREENSHOTS=1 it replaces
// the one in docs/console/ (used by docs/console.md), otherwise it goes to
// a temporary directory, so a test run leaves the tree as it was.
func docShot(t *testing.T, b context.Context, name string) {
	t.Helper()
	dir := t.TempDir()
	if os.Getenv("AIRLOCK_DOC_SCREENSHOTS") == "1" {
		dir = filepath.Join("..", "docs", "console")
	}
	testenv.Screenshot(t, b, filepath.Join(dir, name))
}

// TestConsoleApprove is the approver's path in a real browser: a one-time
// link from `airlock console`, a request filed with `airlock request` on
// another replica appearing without a reload, an approval narrowed in the
// browser with a comment, the agent's psql working, the events carrying
// approver and comment, and a revocation from the grants page ending the
// live session.
func TestConsoleApprove(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	g2 := startGateway(t, gatewayOptions{ReplicaOf: g})
	b := testenv.Chromium(t)

	link := g.consoleLink("alice")
	signInByLink(t, b, link.URL)
	if loc := location(t, b); loc != "/ui/requests" {
		t.Fatalf("after sign-in the browser is at %q, want /ui/requests", loc)
	}
	// The sign-in URL is not where history leaves the approver.
	if strings.Contains(evalJS[string](t, b, "location.href"), "/signin/") {
		t.Fatal("the sign-in link is the current page")
	}
	// Used on one replica, the link is spent on the other too.
	resp, err := http.Post(g2.URL+strings.TrimPrefix(link.URL, g.URL), "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone {
		t.Errorf("the used link on the other replica: %s, want 410", resp.Status)
	}
	within(t, b, 30*time.Second, "queue empty", chromedp.WaitVisible(chromedp.ID("no-pending")))
	// A marker that a reload would lose.
	evalJS[bool](t, b, "window.__noReload = true")

	// The agent files a request through the other replica.
	task := "INC-42: count yesterday's failed orders"
	var iss control.Issued
	if err := g2.cliJSONErr(&iss, "agent-1", "request", "--resource", "demo-pg", "--task", task,
		"--access", "read", "--ttl", "2h", "--table", "public.orders", "--table", "public.customers"); err != nil {
		t.Fatal(err)
	}
	id := iss.Grant.ID
	within(t, b, 30*time.Second, "request appears live", chromedp.WaitVisible(chromedp.ID("req-"+id)))
	if !evalJS[bool](t, b, "window.__noReload === true") {
		t.Fatal("the page reloaded to show the request")
	}
	card := evalJS[string](t, b, fmt.Sprintf("document.getElementById(%q).innerText", "req-"+id))
	for _, want := range []string{"agent-1", task, "demo-pg", "read", "public.orders, public.customers", "2h"} {
		if !strings.Contains(card, want) {
			t.Errorf("the request card lacks %q:\n%s", want, card)
		}
	}
	docShot(t, b, "requests.png")

	// The same session works on the other replica (the cookie is per host).
	within(t, b, 30*time.Second, "other replica", chromedp.Navigate(g2.URL+"/ui/requests/"+id), chromedp.WaitVisible(chromedp.ID("approve-form")))
	within(t, b, 30*time.Second, "narrow the approval",
		chromedp.SetValue(chromedp.ID("ttl"), "30m"),
		chromedp.Click(chromedp.CSS(`input[name="table"][value="public.customers"]`)),
		chromedp.SendKeys(chromedp.ID("comment"), "orders only, for INC-42"),
	)
	docShot(t, b, "approve.png")
	// As an approver on call sees it on a phone.
	within(t, b, 30*time.Second, "phone viewport", chromedp.EmulateViewport(390, 844))
	docShot(t, b, "approve-phone.png")
	within(t, b, 30*time.Second, "desktop viewport", chromedp.EmulateViewport(1280, 900))
	within(t, b, 30*time.Second, "approve", chromedp.Click(chromedp.ID("approve")), chromedp.WaitVisible(chromedp.ID("notice")))
	if loc := location(t, b); !strings.HasPrefix(loc, "/ui/grants/"+id) {
		t.Fatalf("after approving the browser is at %q", loc)
	}
	var gr authz.Grant
	g.CLIJSON(&gr, "alice", "grants", "show", id)
	if gr.State != authz.StateActive || gr.DecidedBy != "alice" || gr.Comment != "orders only, for INC-42" ||
		time.Duration(gr.TTL) != 30*time.Minute || strings.Join(gr.Scope.Tables, ",") != "public.orders" {
		t.Fatalf("approved grant: state %s by %s comment %q ttl %s tables %v", gr.State, gr.DecidedBy, gr.Comment, time.Duration(gr.TTL), gr.Scope.Tables)
	}

	// The agent's psql works with the token, within the narrowed scope.
	out, err := g.psql("agent-1", iss.Token, "demo-pg", "select count(*) from orders;\n")
	if err != nil || !strings.Contains(out, "count") {
		t.Fatalf("psql under the approved grant: %v\n%s", err, out)
	}
	if out, _ := g.psql("agent-1", iss.Token, "demo-pg", "select count(*) from customers;\n"); !strings.Contains(out, "ERROR") {
		t.Errorf("a table the approver left out was readable:\n%s", out)
	}
	var list []struct {
		Session string `json:"session"`
		Grant   string `json:"grant"`
	}
	g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1")
	var sid string
	for _, s := range list {
		if s.Grant == id {
			sid = s.Session
		}
	}
	if sid == "" {
		t.Fatalf("no session of grant %s in %+v", id, list)
	}
	var d struct {
		Events []struct {
			Type            string `json:"type"`
			Approver        string `json:"approver"`
			ApprovalComment string `json:"approval_comment"`
		} `json:"events"`
	}
	g.CLIJSON(&d, "rita", "sessions", "show", sid)
	if len(d.Events) < 2 {
		t.Fatalf("session %s has %d events", sid, len(d.Events))
	}
	for _, ev := range d.Events {
		if ev.Approver != "alice" || ev.ApprovalComment != "orders only, for INC-42" {
			t.Errorf("event %s carries approver %q comment %q", ev.Type, ev.Approver, ev.ApprovalComment)
		}
	}
	if out := g.MustCLI("rita", "sessions", "verify", sid); !strings.Contains(out, sid+": ok:") {
		t.Errorf("verify after adding approval_comment: %s", out)
	}

	// A live session shows on the grants page; revoke there ends it.
	live := startPsql(t, g, "agent-1", iss.Token, "demo-pg")
	live.query(t, "select count(*) from orders;", "count")
	within(t, b, 30*time.Second, "grants page", chromedp.Navigate(g.URL+"/ui/grants"), chromedp.WaitVisible(chromedp.ID("grant-"+id)))
	deadline := time.Now().Add(10 * time.Second)
	for !evalJS[bool](t, b, fmt.Sprintf(`!!document.querySelector("#grant-%s table.sessions")`, id)) {
		if time.Now().After(deadline) {
			t.Fatal("the live psql session is not on the grants page")
		}
		within(t, b, 30*time.Second, "reload grants", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("grant-"+id)))
	}
	docShot(t, b, "grants.png")
	start := time.Now()
	within(t, b, 30*time.Second, "revoke", chromedp.Click(chromedp.CSS("#grant-"+id+" button.revoke")), chromedp.WaitVisible(chromedp.ID("notice")))
	if err := live.waitExit(5 * time.Second); err != nil {
		t.Fatalf("psql still connected after revoking in the browser: %v", err)
	}
	t.Logf("revoke in the browser to psql ended: %s", time.Since(start).Round(time.Millisecond))
	g.CLIJSON(&gr, "alice", "grants", "show", id)
	if gr.State != authz.StateRevoked || gr.RevokedBy != "alice" {
		t.Errorf("after revoke: %s by %q", gr.State, gr.RevokedBy)
	}
	// The same decision options from the CLI; the open queue follows it.
	within(t, b, 30*time.Second, "queue", chromedp.Navigate(g.URL+"/ui/requests"), chromedp.WaitVisible(chromedp.ID("no-pending")))
	evalJS[bool](t, b, "window.__noReload = true")
	var iss2 control.Issued
	if err := g.cliJSONErr(&iss2, "agent-1", "request", "--resource", "demo-pg", "--task", "INC-43", "--ttl", "1h"); err != nil {
		t.Fatal(err)
	}
	within(t, b, 30*time.Second, "second request appears live", chromedp.WaitVisible(chromedp.ID("req-"+iss2.Grant.ID)))
	if _, err := g.CLI("alice", "grants", "deny", iss2.Grant.ID); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Errorf("deny without --reason: %v", err)
	}
	if _, err := g.CLI("alice", "grants", "approve", iss2.Grant.ID, "--ttl", "3h"); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("approve for longer than asked: %v", err)
	}
	g.CLIJSON(&gr, "alice", "grants", "approve", iss2.Grant.ID, "--ttl", "20m", "--table", "public.orders", "--comment", "cli ok")
	if gr.State != authz.StateActive || gr.Comment != "cli ok" || time.Duration(gr.TTL) != 20*time.Minute || strings.Join(gr.Scope.Tables, ",") != "public.orders" {
		t.Errorf("CLI approval: %s %q %s %v", gr.State, gr.Comment, time.Duration(gr.TTL), gr.Scope.Tables)
	}
	within(t, b, 30*time.Second, "request approved elsewhere leaves the queue", chromedp.WaitNotPresent(chromedp.ID("req-"+iss2.Grant.ID)), chromedp.WaitVisible(chromedp.ID("no-pending")))
	if !evalJS[bool](t, b, "window.__noReload === true") {
		t.Fatal("the queue page reloaded")
	}
	assertNoSecretsLogged(t, b, []*gateway{g, g2}, link.URL)
}

// TestConsoleSecurity: a cross-origin POST is refused, a reviewer cannot
// approve, a reused and an expired link are refused, task text is shown
// as text, pages read with JavaScript off, and no secret is logged.
func TestConsoleSecurity(t *testing.T) {
	g := startGateway(t, gatewayOptions{})
	expiring := g.consoleLink("alice") // used only after it has expired
	issued := time.Now()
	b := testenv.Chromium(t)

	// Refusals the test causes, as the browser logs them.
	b.Allow("403 (Forbidden)")
	b.Allow("410 (Gone)")
	b.Allow("(" + g.URL + "/ui/sessions)") // the reviewer's home, another helper's page

	used := g.consoleLink("alice")
	signInByLink(t, b, used.URL)
	var iss control.Issued
	task := `<script>alert(1)</script> "><img src=x onerror=alert(2)> INC-9`
	if err := g.cliJSONErr(&iss, "agent-1", "request", "--resource", "demo-pg", "--task", task); err != nil {
		t.Fatal(err)
	}
	id := iss.Grant.ID

	// The task is text, in the queue and on the request's page.
	for _, p := range []string{"/ui/requests", "/ui/requests/" + id} {
		within(t, b, 30*time.Second, "open "+p, chromedp.Navigate(g.URL+p), chromedp.WaitVisible(chromedp.CSS(".task")))
		n := evalJS[int](t, b, `document.querySelectorAll("main script, main img, main [onerror]").length`)
		if n != 0 {
			t.Errorf("%s: the task text became %d elements", p, n)
		}
		txt := evalJS[string](t, b, `Array.from(document.querySelectorAll(".task")).map(e => e.textContent).join("\n")`)
		if !strings.Contains(txt, task) {
			t.Errorf("%s: the task is not shown as text: %q", p, txt)
		}
	}
	if d := b.Dialogs(); len(d) != 0 {
		t.Errorf("a dialog opened: %v", d)
	}

	// A page of another origin (same site: the cookie goes along) posts an
	// approval: refused, and the request stays pending.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/ui/requests/%s/approve"><input name="comment" value="pwned"></form><script>document.getElementById("f").submit()</script>`, g.URL, id)
	}))
	defer evil.Close()
	within(t, b, 30*time.Second, "cross-origin post", chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if h1 := evalJS[string](t, b, `document.querySelector("main h1").textContent`); h1 != "403" {
		t.Errorf("the cross-origin post answered %q, want the 403 page", h1)
	}
	var gr authz.Grant
	g.CLIJSON(&gr, "alice", "grants", "show", id)
	if gr.State != authz.StatePending {
		t.Fatalf("after a cross-origin post the request is %s", gr.State)
	}

	// A reused link: refused, and says why.
	within(t, b, 30*time.Second, "reuse link", chromedp.Navigate(used.URL), chromedp.WaitVisible(chromedp.CSS("p.error")))
	if txt := evalJS[string](t, b, `document.querySelector("p.error").textContent`); !strings.Contains(txt, "used or has expired") {
		t.Errorf("reused link says %q", txt)
	}
	if _, err := chromedp.Run(b, chromedp.Evaluate[int](fmt.Sprintf(`fetch(%q, {method: "POST"}).then(r => r.status)`, strings.TrimPrefix(used.URL, g.URL)), chromedp.EvalAwaitPromise)); err != nil {
		t.Fatal(err)
	}

	// The reviewer: no approve form, and a same-origin POST is 403.
	within(t, b, 30*time.Second, "sign out", chromedp.Navigate(g.URL+"/ui/requests"), chromedp.Click(chromedp.CSS(`form[action="/ui/signout"] button`)), chromedp.WaitVisible(chromedp.ID("token")))
	within(t, b, 30*time.Second, "reviewer signs in with a token",
		chromedp.SendKeys(chromedp.ID("token"), g.Tokens["rita"]),
		chromedp.Submit(chromedp.ID("token")),
	)
	leftPage(t, b, "/ui/signin")
	within(t, b, 30*time.Second, "reviewer opens the request", chromedp.Navigate(g.URL+"/ui/requests/"+id), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if h1 := evalJS[string](t, b, `document.querySelector("main h1").textContent`); h1 != "403" {
		t.Errorf("reviewer on a request page sees %q, want 403", h1)
	}
	ctx, cancel := context.WithTimeout(b, 10*time.Second)
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(
		`fetch("/ui/requests/%s/approve", {method: "POST", body: new URLSearchParams({comment: "rita says yes"})}).then(r => r.status)`, id), chromedp.EvalAwaitPromise))
	cancel()
	if err != nil || status != http.StatusForbidden {
		t.Errorf("reviewer's approve POST: %d, %v; want 403", status, err)
	}
	g.CLIJSON(&gr, "alice", "grants", "show", id)
	if gr.State != authz.StatePending {
		t.Fatalf("after the reviewer's POST the request is %s", gr.State)
	}

	// Reading works with JavaScript off: a new approver session, no script.
	if _, err := chromedp.Call(b, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	within(t, b, 30*time.Second, "sign in without JavaScript",
		chromedp.Navigate(g.consoleLink("alice").URL),
		chromedp.WaitVisible(chromedp.ID("continue")),
		chromedp.Click(chromedp.ID("continue")),
	)
	leftPage(t, b, "/ui/signin")
	within(t, b, 30*time.Second, "deny without JavaScript",
		chromedp.WaitVisible(chromedp.ID("req-"+id)),
		chromedp.Click(chromedp.CSS("#req-"+id+" a.review")),
		chromedp.WaitVisible(chromedp.ID("deny-form")),
		chromedp.SendKeys(chromedp.ID("reason"), "not with markup in the task"),
		chromedp.Click(chromedp.ID("deny")),
		chromedp.WaitVisible(chromedp.ID("notice")),
	)
	g.CLIJSON(&gr, "alice", "grants", "show", id)
	if gr.State != authz.StateDenied || gr.Comment != "not with markup in the task" {
		t.Errorf("denied without JavaScript: %s %q", gr.State, gr.Comment)
	}
	if _, err := chromedp.Call(b, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: false}); err != nil {
		t.Fatal(err)
	}

	// An expired link: refused.
	if wait := time.Until(issued.Add(61 * time.Second)); wait > 0 {
		t.Logf("waiting %s for the first link to expire", wait.Round(time.Second))
		time.Sleep(wait)
	}
	within(t, b, 30*time.Second, "expired link", chromedp.Navigate(expiring.URL), chromedp.WaitVisible(chromedp.CSS("p.error")))
	if txt := evalJS[string](t, b, `document.querySelector("p.error").textContent`); !strings.Contains(txt, "used or has expired") {
		t.Errorf("expired link says %q", txt)
	}
	assertNoSecretsLogged(t, b, []*gateway{g}, used.URL, expiring.URL)
}

// assertNoSecretsLogged scans the gateways' logs for every API token, the
// link secrets and the browser's session cookie.
func assertNoSecretsLogged(t *testing.T, b context.Context, gs []*gateway, links ...string) {
	t.Helper()
	var secrets []string
	for _, tok := range gs[0].Tokens {
		secrets = append(secrets, tok)
	}
	for _, l := range links {
		secrets = append(secrets, l[strings.LastIndex(l, "/")+1:])
	}
	r, err := chromedp.Call(b, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Cookies {
		if c.Name == "airlock_session" {
			secrets = append(secrets, c.Value)
			if !c.HTTPOnly || c.SameSite != network.CookieSameSiteLax {
				t.Errorf("session cookie: HttpOnly %v SameSite %q", c.HTTPOnly, c.SameSite)
			}
		}
	}
	for _, g := range gs {
		logs := g.Log()
		if g == gs[0] && !regexp.MustCompile(`msg="console sign-in" .*identity=alice`).MatchString(logs) {
			t.Errorf("the log of %s has no sign-in line: is this the right log?", g.URL)
		}
		for _, s := range secrets {
			if len(s) >= 16 && strings.Contains(logs, s) {
				t.Errorf("the gateway log holds a secret (%s…)", s[:6])
			}
		}
	}
}

// cliJSONErr is cliJSON that returns the error.
func (g *gateway) cliJSONErr(v any, identity string, args ...string) error {
	g.t.Helper()
	out, err := g.CLI(identity, append(args, "--json")...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), v)
}

// livePsql is a psql process kept open, fed statement by statement.
type livePsql struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	exited chan error
}

func startPsql(t *testing.T, g *gateway, user, password, dbname string) *livePsql {
	t.Helper()
	host, port, _ := strings.Cut(g.PostgresAddr, ":")
	cmd := exec.Command("psql", fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=require connect_timeout=10", host, port, user, dbname), "-X")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password)
	stdin, _ := cmd.StdinPipe()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &livePsql{cmd: cmd, stdin: stdin, lines: make(chan string, 256), exited: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() { err := cmd.Wait(); pw.Close(); p.exited <- err }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})
	return p
}

func (p *livePsql) query(t *testing.T, sql, want string) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, sql+"\n"); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if strings.Contains(l, want) {
				return
			}
		case err := <-p.exited:
			t.Fatalf("psql exited: %v", err)
		case <-timeout:
			t.Fatalf("psql printed no %q within 15s", want)
		}
	}
}

// waitExit waits for psql to end: the server closed its connection (the
// next statement is sent to make psql notice).
func (p *livePsql) waitExit(d time.Duration) error {
	deadline := time.After(d)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.exited:
			return nil
		case <-tick.C:
			_, _ = io.WriteString(p.stdin, "select 1;\n")
		case <-deadline:
			return fmt.Errorf("still running after %s", d)
		}
	}
}
