package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// TestConsoleReview is the reviewer's path in a real browser: a psql
// session with a denied statement found in the sessions list, its page
// with the denial highlighted with its rule and the verify badge intact;
// the stream tampered with, the badge shows the break; an SSH session
// replayed in asciinema-player showing the command's output; and an agent
// refused another agent's session.
func TestConsoleReview(t *testing.T) {
	g := startGateway(t, gatewayOptions{SSH: true})

	// A psql session with a denied statement, and a statement whose text
	// is markup.
	var iss control.Issued
	g.CLIJSON(&iss, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-77: orders report", "--access", "read")
	out, err := g.psql("agent-1", iss.Token, "demo-pg", "select count(*) from orders;\ndelete from orders;\nselect '<script>alert(1)</script>' as x;\n")
	if err != nil && !strings.Contains(out, "airlock") {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	var list []recorder.Summary
	g.CLIJSON(&list, "rita", "sessions", "list", "--agent", "agent-1", "--denied", "--state", "ended")
	if len(list) != 1 || list[0].Denied != 1 {
		t.Fatalf("sessions list --denied: %+v", list)
	}
	sid := list[0].Session
	var d control.SessionDetail
	g.CLIJSON(&d, "rita", "sessions", "show", sid)
	var rule, reason string
	for _, ev := range d.Events {
		if ev.Statement != nil && ev.Statement.Decision == "deny" {
			rule, reason = ev.Statement.Rule, ev.Statement.Reason
		}
	}
	if rule == "" {
		t.Fatalf("no denied statement in %s", sid)
	}

	// An SSH command with a terminal (ssh -tt), for the replay.
	g.sshGrant("box", "INC-78: look at the box", "--command", "echo *", "--shell")
	if r := g.sshAs("box", g.keyAuth(), "", "-tt", "echo", "replay-marker-7"); r.code != 0 || !strings.Contains(r.stdout, "replay-marker-7") {
		t.Fatalf("ssh -tt echo: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	sshSid := g.lastSessionID("box")

	b := testenv.Chromium(t)
	signInByLink(t, b, g.consoleLink("rita").URL)
	if loc := location(t, b); loc != "/ui/sessions" {
		t.Fatalf("the reviewer's home is %q, want /ui/sessions", loc)
	}
	within(t, b, 30*time.Second, "sessions list",
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-session=%q]`, sid))),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-session=%q]`, sshSid))))
	docShot(t, b, "sessions-list.png")
	// The filter form works as a plain GET.
	within(t, b, 30*time.Second, "filter has denials",
		chromedp.Click(chromedp.CSS(`input[name="denied"]`)),
		chromedp.Click(chromedp.CSS(`#session-filter button[type="submit"]`)))
	waitLoaded(t, b, "denied=true")
	within(t, b, 30*time.Second, "filtered list", chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-session=%q]`, sid))))
	if n := evalJS[int](t, b, `document.querySelectorAll("#session-list tr[data-session]").length`); n != 1 || !strings.Contains(location(t, b), "denied=true") {
		t.Errorf("has-denials filter lists %d sessions at %s", n, location(t, b))
	}

	// The session page: the denial stands out with its rule and reason.
	within(t, b, 30*time.Second, "session page",
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href="/ui/sessions/%s"]`, sid))),
		chromedp.WaitVisible(chromedp.ID("timeline")))
	denied := evalJS[string](t, b, `Array.from(document.querySelectorAll("#timeline tr.stmt.denied")).map(e => e.innerText).join("\n")`)
	if !strings.Contains(denied, "delete from orders") || !strings.Contains(denied, "DENIED") || !strings.Contains(denied, rule) || !strings.Contains(denied, reason) {
		t.Errorf("the denied row reads %q, want the statement, DENIED, rule %q and %q", denied, rule, reason)
	}
	if bg := evalJS[string](t, b, `getComputedStyle(document.querySelector("#timeline tr.stmt.denied td")).backgroundColor`); bg == evalJS[string](t, b, `getComputedStyle(document.querySelector("#timeline tr.stmt:not(.denied) td")).backgroundColor`) {
		t.Errorf("the denied row is not highlighted (background %s, as the others)", bg)
	}
	if n := evalJS[int](t, b, `document.querySelectorAll("#timeline script, dl.session-meta script").length`); n != 0 {
		t.Errorf("a statement's text became %d script elements", n)
	}
	if !strings.Contains(evalJS[string](t, b, `document.getElementById("timeline").innerText`), "<script>alert(1)</script>") {
		t.Error("the statement with markup is not shown as text")
	}
	if v := evalJS[string](t, b, `document.getElementById("verify-badge").dataset.verify + " " + document.getElementById("verify-badge").innerText`); v != "intact verify: intact" {
		t.Errorf("verify badge %q, want intact", v)
	}
	meta := evalJS[string](t, b, `document.querySelector("dl.session-meta").innerText`)
	for _, want := range []string{"agent-1", "INC-77: orders report", iss.Grant.ID, "alice", "demo-pg"} {
		if !strings.Contains(meta, want) {
			t.Errorf("session meta lacks %q:\n%s", want, meta)
		}
	}
	docShot(t, b, "session-denial.png")
	// The psql session replays in the player too: its transcript, the
	// denial marked with its rule.
	within(t, b, 30*time.Second, "psql session player", chromedp.WaitVisible(chromedp.CSS("#player .ap-player")))
	evalJS[bool](t, b, `(window.airlockPlayer.play(), true)`)
	var dbTerm string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		dbTerm = evalJS[string](t, b, `(document.querySelector("#player .ap-term") || document.getElementById("player")).textContent`)
		if strings.Contains(dbTerm, "DENIED (rule "+rule+")") {
			break
		}
	}
	if !strings.Contains(dbTerm, "DENIED (rule "+rule+")") {
		t.Errorf("the psql session's player never showed the denial; it shows %q", dbTerm)
	}
	// The download is the export airlock sessions export writes.
	exp := evalAwait[string](t, b, fmt.Sprintf(`fetch("/ui/sessions/%s/export").then(r => r.text())`, sid))
	x, err := recorder.ReadExport(strings.NewReader(exp))
	if err != nil {
		t.Fatalf("evidence bundle: %v", err)
	}
	if rep, err := x.Verify(nil); err != nil || !rep.OK() {
		t.Errorf("evidence bundle verifies: %+v %v", rep, err)
	}

	// Tamper with the stream: an altered copy of the first statement is
	// stored beside it. The badge shows the break
	// at that seq, as airlock sessions verify does.
	seq := tamperFirstStatement(t, g, sid)
	within(t, b, 30*time.Second, "reload after tampering", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("verify-badge")))
	badge := evalJS[string](t, b, `document.getElementById("verify-badge").dataset.verify + " " + document.getElementById("verify-badge").innerText`)
	want := fmt.Sprintf("broken verify: broken at seq %d", seq)
	if badge != want {
		t.Errorf("after tampering the badge reads %q, want %q", badge, want)
	}
	cli, _, code := g.CLIRun("rita", "sessions", "verify", sid)
	if code != 1 || !strings.Contains(cli, strings.TrimSpace(evalJS[string](t, b, `document.getElementById("verify-detail").innerText`))) {
		t.Errorf("the badge's detail is not what airlock sessions verify says:\nCLI: %s\npage: %s", cli, evalJS[string](t, b, `document.getElementById("verify-detail").innerText`))
	}
	docShot(t, b, "verify-broken.png")

	// The SSH session replays in the player; its terminal shows the
	// command's output.
	within(t, b, 30*time.Second, "ssh session page",
		chromedp.Navigate(g.URL+"/ui/sessions/"+sshSid),
		chromedp.WaitVisible(chromedp.ID("player")),
		chromedp.WaitVisible(chromedp.CSS("#player .ap-player")))
	evalJS[bool](t, b, `(window.airlockPlayer.play(), true)`)
	deadline := time.Now().Add(20 * time.Second)
	var term string
	for time.Now().Before(deadline) {
		term = evalJS[string](t, b, `(document.querySelector("#player .ap-term") || document.getElementById("player")).textContent`)
		if strings.Contains(term, "replay-marker-7") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(term, "replay-marker-7") {
		t.Fatalf("the player's terminal never showed the output; it shows %q", term)
	}
	if cast := evalAwait[string](t, b, fmt.Sprintf(`fetch("/ui/sessions/%s/cast").then(r => r.text())`, sshSid)); !strings.HasPrefix(cast, `{"version":2`) {
		t.Errorf("asciicast download: %.80q", cast)
	}
	docShot(t, b, "ssh-replay.png")

	// An agent reads its own sessions only: another agent's is not found.
	b2 := testenv.Chromium(t)
	b2.Allow("404 (Not Found)")
	signInByLink(t, b2, g.consoleLink("agent-2").URL)
	within(t, b2, 30*time.Second, "agent-2 opens agent-1's session", chromedp.Navigate(g.URL+"/ui/sessions/"+sid), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if h1 := evalJS[string](t, b2, `document.querySelector("main h1").textContent`); h1 != "404" || strings.Contains(evalJS[string](t, b2, "document.body.innerText"), "delete from orders") {
		t.Errorf("agent-2 opening agent-1's session got %q", h1)
	}
	within(t, b2, 30*time.Second, "agent-2's list", chromedp.Navigate(g.URL+"/ui/sessions"), chromedp.WaitVisible(chromedp.ID("session-list")))
	if n := evalJS[int](t, b2, `document.querySelectorAll("#session-list tr[data-session]").length`); n != 0 {
		t.Errorf("agent-2's list shows %d sessions of others", n)
	}
	resp, err := http.Get(g.URL + "/ui/sessions/" + sid)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.Path != "/ui/signin" {
		t.Errorf("signed out, the session page went to %s", resp.Request.URL.Path)
	}
}

// lastSessionID is the newest session of agent-1 on resource once it has
// ended.
func (g *gateway) lastSessionID(resource string) string {
	g.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list := g.sessionsOf(resource)
		if len(list) > 0 && list[0].Status == recorder.StatusEnded {
			return list[0].Session
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("no ended session of agent-1 on %s: %+v", resource, list)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tamperFirstStatement stores an altered copy of the session's first
// statement (the stream refuses deletes: deny_delete), as someone with
// publish rights on the events' subjects could, and returns its seq.
func tamperFirstStatement(t *testing.T, g *gateway, sid string) uint64 {
	t.Helper()
	nc, err := nats.Connect(g.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "AIRLOCK_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(recorder.DefaultSubjectPrefix+"."+sid+"."+recorder.KindStmt))
	if err != nil {
		t.Fatalf("first statement of %s: %v", sid, err)
	}
	var ev struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Seq == 0 {
		t.Fatalf("first statement of %s: %v %s", sid, err, msg.Data)
	}
	forged := strings.Replace(string(msg.Data), `"decision":"allow"`, `"decision":"deny"`, 1)
	if forged == string(msg.Data) {
		t.Fatalf("the first statement of %s was not allowed: %s", sid, msg.Data)
	}
	if _, err := js.Publish(ctx, msg.Subject, []byte(forged)); err != nil {
		t.Fatalf("publish the altered copy: %v", err)
	}
	return ev.Seq
}

// evalAwait evaluates expr and waits for the promise it returns.
func evalAwait[T any](t *testing.T, b context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("browser: evaluating %s: %v", expr, err)
	}
	return v
}

// waitLoaded waits until the browser has loaded a page whose address
// contains part.
func waitLoaded(t *testing.T, b context.Context, part string) {
	t.Helper()
	waitPage(t, b, fmt.Sprintf(`location.href.includes(%q)`, part), "never loaded a page at ..."+part+"...")
}
