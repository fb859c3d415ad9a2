package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/control/notify"
	"github.com/airlockhq/airlock/testenv"
)

const publicURL = "https://airlock.test"

// notifyConfig is the console and notify blocks for targets, each a
// "{ ... }" flow mapping without url; hooks are their receivers, in order.
func notifyConfig(hooks []*testenv.Webhook, targets ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "console:\n  public_url: %s\nnotify:\n", publicURL)
	for i, t := range targets {
		fmt.Fprintf(&b, "  - { url: %q, timeout: 1s, retry_min: 100ms, retry_max: 400ms, %s }\n", hooks[i].URL, t)
	}
	return b.String()
}

// hookBody is the standard body as a receiver reads it.
type hookBody struct {
	Type      string      `json:"type"`
	Timestamp time.Time   `json:"timestamp"`
	Data      notify.Data `json:"data"`
}

// waitType waits until the receiver has accepted a notification of typ
// (about id, when set) and returns its body.
func waitType(t *testing.T, h *testenv.Webhook, typ, id string) hookBody {
	t.Helper()
	var found hookBody
	ok := h.WaitFor(20*time.Second, func(ds []*testenv.Delivery) bool {
		for _, d := range ds {
			var b hookBody
			if d.Status < 300 && d.Decode(&b) == nil && b.Type == typ && (id == "" || b.Data.GrantID == id || b.Data.Session == id) {
				found = b
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no %s notification (%s) delivered; received %d, rejected %v", typ, id, len(h.Received()), h.Rejected())
	}
	return found
}

// onceEach checks that every webhook-id was answered 2xx exactly once and
// returns how many ids there were.
func onceEach(t *testing.T, h *testenv.Webhook) map[string]int {
	t.Helper()
	ok := map[string]int{}
	for _, d := range h.Delivered() {
		ok[d.ID]++
	}
	for id, n := range ok {
		if n != 1 {
			t.Errorf("webhook-id %s delivered %d times", id, n)
		}
	}
	return ok
}

// TestNotifyLifecycle: a standard target and a Slack target hear of a
// request, its approval, a denied statement, the revocation, a denied
// request and an expired grant, each signed (the receiver checks with
// its own implementation) and linking to the console.
func TestNotifyLifecycle(t *testing.T) {
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{})
	slack := testenv.StartWebhook(t, testenv.WebhookOptions{Unsigned: true})
	slack.Respond(func(*testenv.Delivery) (int, http.Header) { return 200, nil })
	all := "request.created, request.approved, request.denied, grant.revoked, grant.expired, statement.denied, session.interrupted"
	g := startGateway(t, gatewayOptions{
		Config: notifyConfig([]*testenv.Webhook{hook, slack},
			"format: standard, secret_env: HOOK_SECRET, events: ["+all+"]",
			"name: slack, format: slack, events: [request.created]"),
		Env: []string{"HOOK_SECRET=" + hook.Secret},
	})

	task := "INC-7: totals <!channel> & <https://evil.example|x>"
	var iss control.Issued
	g.CLIJSON(&iss, "agent-1", "request", "--resource", "demo-pg", "--task", task, "--access", "read", "--table", "public.orders")
	id := iss.Grant.ID
	b := waitType(t, hook, "request.created", id)
	d := b.Data
	if d.RequestID != id || d.Agent != "agent-1" || d.Resource != "demo-pg" || d.Access != "read" || d.Task != task ||
		d.URL != publicURL+"/ui/requests/"+id || len(d.Tables) != 1 || b.Timestamp.IsZero() {
		t.Errorf("request.created: %+v", b)
	}

	// The Slack message: Block Kit, task escaped, a button to the request.
	if !slack.WaitFor(20*time.Second, func(ds []*testenv.Delivery) bool { return len(ds) > 0 }) {
		t.Fatal("slack target received nothing")
	}
	checkBlockKit(t, slack.Received()[0].Body, publicURL+"/ui/requests/"+id)

	g.MustCLI("alice", "grants", "approve", id)
	if b := waitType(t, hook, "request.approved", id); b.Data.By != "alice" || b.Data.URL != publicURL+"/ui/grants/"+id || b.Data.ExpiresAt == nil {
		t.Errorf("request.approved: %+v", b.Data)
	}

	out, err := g.psql("agent-1", iss.Token, "demo-pg", "select 1;\ndelete from orders;\n")
	if !strings.Contains(out, "ERROR") {
		t.Fatalf("delete was not refused: %v\n%s", err, out)
	}
	sd := waitType(t, hook, "statement.denied", id).Data
	if !strings.HasPrefix(sd.Session, "ses_") || !strings.Contains(sd.Statement, "delete from orders") || sd.Rule == "" || sd.Reason == "" ||
		sd.URL != publicURL+"/ui/sessions/"+sd.Session || sd.Agent != "agent-1" || sd.Task != task {
		t.Errorf("statement.denied: %+v", sd)
	}

	g.MustCLI("alice", "grants", "revoke", id)
	if b := waitType(t, hook, "grant.revoked", id); b.Data.By != "alice" {
		t.Errorf("grant.revoked: %+v", b.Data)
	}

	var other control.Issued
	g.CLIJSON(&other, "agent-1", "request", "--resource", "demo-pg", "--task", "INC-8", "--access", "write")
	g.MustCLI("alice", "grants", "deny", other.Grant.ID, "--reason", "not for INC-8")
	if b := waitType(t, hook, "request.denied", other.Grant.ID); b.Data.By != "alice" || b.Data.Access != "write" || b.Data.Reason != "not for INC-8" {
		t.Errorf("request.denied: %+v", b.Data)
	}

	var short control.Issued
	g.CLIJSON(&short, "alice", "grants", "create", "--agent", "agent-1", "--resource", "demo-pg", "--task", "INC-9", "--ttl", "2s")
	if b := waitType(t, hook, "grant.expired", short.Grant.ID); b.Data.URL != publicURL+"/ui/grants/"+short.Grant.ID {
		t.Errorf("grant.expired: %+v", b.Data)
	}

	if r := hook.Rejected(); len(r) > 0 {
		t.Fatalf("the receiver refused signatures: %v", r)
	}
	if n := len(onceEach(t, hook)); n != 7 { // created twice, approved, denied stmt, revoked, denied, expired
		t.Errorf("%d notifications delivered, want 7", n)
	}
	// No log line holds the target's path or the signing secret.
	logs := g.Log()
	for _, secret := range []string{"T0SECRETPATH", strings.TrimPrefix(hook.Secret, "whsec_")} {
		if strings.Contains(logs, secret) {
			t.Errorf("the gateway logged %q", secret)
		}
	}

	var st control.NotifyReport
	g.CLIJSON(&st, "alice", "notify", "status")
	if len(st.Targets) != 2 || st.Targets[0].Delivered < 7 || st.Targets[1].Name != "slack" || st.Targets[1].Delivered != 2 {
		t.Errorf("notify status: %+v", st)
	}
	if _, err := g.CLI("rita", "notify", "status"); err == nil || !strings.Contains(err.Error(), "approver or admin") {
		t.Errorf("a reviewer read the notify status: %v", err)
	}
}

// checkBlockKit checks a Slack body's structure and limits.
func checkBlockKit(t *testing.T, body []byte, url string) {
	t.Helper()
	var m struct {
		Text   string           `json:"text"`
		Blocks []map[string]any `json:"blocks"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("slack body is not JSON: %v\n%s", err, body)
	}
	if m.Text == "" || len(m.Blocks) < 2 || len(m.Blocks) > 50 {
		t.Fatalf("slack body: %s", body)
	}
	button := false
	for _, b := range m.Blocks {
		switch b["type"] {
		case "header":
			txt, _ := b["text"].(map[string]any)
			if txt["type"] != "plain_text" || len([]rune(fmt.Sprint(txt["text"]))) > 150 {
				t.Errorf("header: %v", b)
			}
		case "section":
			if txt, ok := b["text"].(map[string]any); ok && (txt["type"] != "mrkdwn" || len(fmt.Sprint(txt["text"])) > 3000) {
				t.Errorf("section: %v", b)
			}
			fs, _ := b["fields"].([]any)
			if len(fs) > 10 {
				t.Errorf("%d fields", len(fs))
			}
			for _, f := range fs {
				if fm := f.(map[string]any); fm["type"] != "mrkdwn" || len(fmt.Sprint(fm["text"])) > 2000 {
					t.Errorf("field %v", f)
				}
			}
		case "actions":
			for _, e := range b["elements"].([]any) {
				em := e.(map[string]any)
				txt, _ := em["text"].(map[string]any)
				if em["type"] == "button" && em["url"] == url && txt["text"] == "Review in airlock" {
					button = true
				}
			}
		default:
			t.Errorf("unknown block %v", b["type"])
		}
	}
	if !button {
		t.Errorf("no button to %s: %s", url, body)
	}
	// Decoded, as Slack reads it (json.Marshal writes < as \u003c).
	var all strings.Builder
	for _, b := range m.Blocks {
		if txt, ok := b["text"].(map[string]any); ok {
			all.WriteString(fmt.Sprint(txt["text"]))
		}
		if fs, ok := b["fields"].([]any); ok {
			for _, f := range fs {
				all.WriteString(fmt.Sprint(f.(map[string]any)["text"]))
			}
		}
	}
	all.WriteString(m.Text)
	if s := all.String(); strings.Contains(s, "<!channel>") || strings.Contains(s, "<https://evil") || !strings.Contains(s, "&lt;!channel&gt;") {
		t.Errorf("agent text reached Slack unescaped: %s", s)
	}
}

// TestNotifyOutageAndRestart: the receiver refuses connections, then the
// gateway is killed and started again with notifications undelivered, then
// the receiver answers 503 for a while: once it answers 2xx every
// notification arrives, each webhook-id once.
func TestNotifyOutageAndRestart(t *testing.T) {
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{})
	g := startGateway(t, gatewayOptions{
		Config: notifyConfig([]*testenv.Webhook{hook}, "format: standard, secret_env: HOOK_SECRET, events: [request.created]"),
		Env:    []string{"HOOK_SECRET=" + hook.Secret},
	})
	hook.Stop()
	var ids []string
	request := func(task string) {
		var iss control.Issued
		g.CLIJSON(&iss, "agent-1", "request", "--resource", "demo-pg", "--task", task)
		ids = append(ids, iss.Grant.ID)
	}
	for i := range 3 {
		request(fmt.Sprintf("while the receiver is down %d", i))
	}
	// Attempts fail (connection refused) before the gateway dies.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(g.Log(), "notification delivery failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no failed attempt logged:\n%s", g.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(g.Log(), "T0SECRETPATH") {
		t.Fatal("a failed attempt logged the target's path")
	}
	g.Kill()
	g.Restart()
	var mu sync.Mutex
	failing := true
	hook.Respond(func(*testenv.Delivery) (int, http.Header) {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return 503, nil
		}
		return 204, nil
	})
	hook.Start(t)
	for i := range 2 {
		request(fmt.Sprintf("while the receiver fails %d", i))
	}
	time.Sleep(1500 * time.Millisecond)
	if len(hook.Delivered()) != 0 {
		t.Fatal("delivered while answering 503")
	}
	if len(hook.Received()) == 0 {
		t.Fatal("no attempt reached the receiver answering 503")
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	// A kill that lands between an attempt and its negative
	// acknowledgement reaching NATS leaves that message unacknowledged: it
	// comes back after AckWait, the target's timeout (1s) + 30s, as
	// docs/notifications.md says. Wait past that.
	if !hook.WaitFor(45*time.Second, func([]*testenv.Delivery) bool { return len(hook.Delivered()) >= len(ids) }) {
		t.Fatalf("delivered %d of %d", len(hook.Delivered()), len(ids))
	}
	time.Sleep(time.Second) // room for a duplicate
	got := onceEach(t, hook)
	for _, id := range ids {
		if got["msg_request_created_"+id] != 1 {
			t.Errorf("request %s not delivered once: %v", id, got)
		}
	}
	if len(got) != len(ids) {
		t.Errorf("%d notifications delivered, want %d", len(got), len(ids))
	}
	t.Logf("%d notifications, %d attempts", len(ids), len(hook.Received()))
}

// TestNotifyKilledMidAttempt: the gateway is killed while the receiver
// holds an attempt unanswered. Its message stays unacknowledged, and the
// restarted gateway delivers it once AckWait (the target's timeout 1s +
// 30s, docs/notifications.md) has passed: at least once, not lost, and not
// sooner than the documented wait.
func TestNotifyKilledMidAttempt(t *testing.T) {
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{})
	held := make(chan struct{})
	release := make(chan struct{})
	var answered atomic.Bool
	hook.Respond(func(*testenv.Delivery) (int, http.Header) {
		if !answered.CompareAndSwap(false, true) {
			return 204, nil
		}
		close(held)
		<-release
		return 503, nil // to a caller that is gone
	})
	g := startGateway(t, gatewayOptions{
		Config: notifyConfig([]*testenv.Webhook{hook}, "format: standard, secret_env: HOOK_SECRET, events: [request.created]"),
		Env:    []string{"HOOK_SECRET=" + hook.Secret},
	})
	var iss control.Issued
	g.CLIJSON(&iss, "agent-1", "request", "--resource", "demo-pg", "--task", "killed mid-attempt")
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatalf("no attempt reached the receiver:\n%s", g.Log())
	}
	attempted := time.Now()
	g.Kill()
	close(release)
	g.Restart()
	id := "msg_request_created_" + iss.Grant.ID
	if !hook.WaitFor(60*time.Second, func([]*testenv.Delivery) bool { return len(hook.Delivered()) > 0 }) {
		t.Fatalf("not delivered within 60s of the restart:\n%s", g.Log())
	}
	d := hook.Delivered()[0]
	if d.ID != id {
		t.Fatalf("delivered %s, want %s", d.ID, id)
	}
	// AckWait runs from the first attempt's delivery, a moment before the
	// receiver saw it.
	if wait := d.At.Sub(attempted); wait < 29*time.Second {
		t.Errorf("delivered again %s after the killed attempt; AckWait is 31s", wait.Round(time.Millisecond))
	} else {
		t.Logf("delivered again %s after the killed attempt", wait.Round(time.Millisecond))
	}
	time.Sleep(time.Second) // room for a duplicate
	if got := onceEach(t, hook); got[id] != 1 || len(got) != 1 {
		t.Errorf("delivered: %v", got)
	}
}

// TestNotifyTwoReplicas: two gateway replicas on one NATS share each
// target's consumer: every notification is delivered once. When one
// replica is killed during a session, the other marks it interrupted and
// session.interrupted is delivered.
func TestNotifyTwoReplicas(t *testing.T) {
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{})
	cfg := notifyConfig([]*testenv.Webhook{hook}, "format: standard, secret_env: HOOK_SECRET, events: [request.created, request.approved, statement.denied, session.interrupted]")
	env := []string{"HOOK_SECRET=" + hook.Secret}
	rc := "  instance_timeout: 2s\n"
	a := startGateway(t, gatewayOptions{Config: cfg, Env: env, Recorder: rc})
	b := startGateway(t, gatewayOptions{ReplicaOf: a, Config: cfg, Env: env, Recorder: rc})
	const n = 10
	var last control.Issued
	for i := range n {
		gw := a
		if i%2 == 1 {
			gw = b
		}
		gw.CLIJSON(&last, "agent-1", "request", "--resource", "demo-pg", "--task", fmt.Sprintf("replicas %d", i), "--access", "read")
	}
	b.MustCLI("alice", "grants", "approve", last.Grant.ID)
	// Denied statements on both replicas.
	for _, gw := range []*gateway{a, b} {
		if out, _ := gw.psql("agent-1", last.Token, "demo-pg", "delete from orders;\n"); !strings.Contains(out, "ERROR") {
			t.Fatalf("delete not refused:\n%s", out)
		}
	}
	want := n + 1 + 2
	if !hook.WaitFor(30*time.Second, func([]*testenv.Delivery) bool { return len(hook.Delivered()) >= want }) {
		t.Fatalf("delivered %d of %d", len(hook.Delivered()), want)
	}
	p := a.openPsql(t, last.Token)
	p.run("select 'on a';", "(1 row)")
	a.Kill()
	p.gone()
	si := waitType(t, hook, "session.interrupted", "")
	if !strings.HasPrefix(si.Data.Session, "ses_") || si.Data.URL != publicURL+"/ui/sessions/"+si.Data.Session {
		t.Errorf("session.interrupted: %+v", si.Data)
	}
	time.Sleep(2 * time.Second) // room for a duplicate
	if got := onceEach(t, hook); len(got) != want+1 {
		t.Errorf("%d notifications delivered, want %d", len(got), want+1)
	}
	if r := hook.Rejected(); len(r) > 0 {
		t.Errorf("receiver refused: %v", r)
	}
}

// TestNotifyGiveUpAndSlowTarget: a target answering 410 is given up at
// once and shows in `airlock notify status`; a target that sleeps past
// its timeout does not slow `airlock request`, an approval or a statement.
func TestNotifyGiveUpAndSlowTarget(t *testing.T) {
	gone := testenv.StartWebhook(t, testenv.WebhookOptions{})
	gone.Respond(func(*testenv.Delivery) (int, http.Header) { return 410, nil })
	slow := testenv.StartWebhook(t, testenv.WebhookOptions{})
	var mu sync.Mutex
	var calls []time.Time
	slow.Respond(func(*testenv.Delivery) (int, http.Header) {
		mu.Lock()
		calls = append(calls, time.Now())
		mu.Unlock()
		time.Sleep(3 * time.Second)
		return 204, nil
	})
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	g := startGateway(t, gatewayOptions{
		Listen: "  metrics: " + metricsAddr + "\n",
		Config: notifyConfig([]*testenv.Webhook{gone, slow},
			"name: gone, format: standard, secret_env: GONE_SECRET, events: [request.created]",
			"name: slow, format: standard, secret_env: SLOW_SECRET, events: [request.created, request.approved, statement.denied]"),
		Env: []string{"GONE_SECRET=" + gone.Secret, "SLOW_SECRET=" + slow.Secret},
	})
	began := time.Now()
	var iss control.Issued
	g.CLIJSON(&iss, "agent-1", "request", "--resource", "demo-pg", "--task", "slow target", "--access", "read")
	answered := time.Now()
	g.MustCLI("alice", "grants", "approve", iss.Grant.ID)
	approved := time.Since(answered)
	t0 := time.Now()
	out, _ := g.psql("agent-1", iss.Token, "demo-pg", "delete from orders;\nselect 1;\n")
	stmt := time.Since(t0)
	if !strings.Contains(out, "ERROR") || !strings.Contains(out, "(1 row)") {
		t.Fatalf("psql:\n%s", out)
	}
	if answered.Sub(began) > 2*time.Second || approved > 2*time.Second || stmt > 3*time.Second {
		t.Errorf("slow target slowed the gateway: request %s, approve %s, psql %s", answered.Sub(began), approved, stmt)
	}
	t.Logf("with a target that takes 3s: request %s, approve %s, psql %s", answered.Sub(began).Round(time.Millisecond), approved.Round(time.Millisecond), stmt.Round(time.Millisecond))
	if !slow.WaitFor(10*time.Second, func(ds []*testenv.Delivery) bool { return len(ds) > 0 }) {
		t.Fatal("the slow target was never called")
	}
	mu.Lock()
	first := calls[0]
	mu.Unlock()
	// The request's answer did not wait for the attempt, which takes the
	// whole 1s timeout.
	if !answered.Before(first.Add(time.Second)) {
		t.Errorf("airlock request answered at %s, after the slow target's attempt (began %s) could end", answered, first)
	}

	// The 410 target: one attempt, given up, in the status.
	var st control.NotifyReport
	deadline := time.Now().Add(15 * time.Second)
	for {
		g.CLIJSON(&st, "alice", "notify", "status")
		if len(st.Targets) == 2 && st.Targets[0].GivenUp == 1 && st.Targets[1].Failures > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status: %+v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	gt, sl := st.Targets[0], st.Targets[1]
	if gt.Delivered != 0 || gt.Pending != 0 || len(gt.GaveUp) != 1 || !strings.Contains(gt.GaveUp[0].Error, "410") || gt.GaveUp[0].ID != "msg_request_created_"+iss.Grant.ID {
		t.Errorf("gone target: %+v", gt)
	}
	if len(gone.Received()) != 1 {
		t.Errorf("410 target attempted %d times", len(gone.Received()))
	}
	if !strings.Contains(sl.LastError, "no answer within 1s") || sl.Pending == 0 || sl.OldestPending == nil || sl.OldestPending.After(time.Now()) || sl.OldestPending.Before(began.Add(-time.Second)) {
		t.Errorf("slow target: %+v", sl)
	}
	text := g.MustCLI("alice", "notify", "status")
	for _, want := range []string{"target:", "gone", "given up", "410", "slow", "last error:", "no answer within 1s", "oldest pending:"} {
		if !strings.Contains(text, want) {
			t.Errorf("notify status text lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "T0SECRETPATH") {
		t.Errorf("notify status shows a target's path:\n%s", text)
	}
	t.Logf("airlock notify status:\n%s", text)

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`airlock_notify_attempts_total{result="4xx",target="gone"} 1`,
		`airlock_notify_given_up_total{target="gone"} 1`,
		`airlock_notify_attempts_total{result="timeout",target="slow"}`,
		`airlock_notify_failures_total{target="slow"}`,
		`airlock_notify_produced_total{type="request.created"} 1`,
		`airlock_notify_oldest_pending_seconds{target="slow"}`,
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestNotifyNATSPermissions: the gateway, as the gateway user of
// deploy/nats/accounts.conf on a 3-node cluster, creates the
// notifications stream, bucket and consumers, follows the events stream
// and delivers; nothing it does is refused.
func TestNotifyNATSPermissions(t *testing.T) {
	u := testenv.NewNATSUsers(t)
	c := testenv.StartDeployNATSCluster(t, u)
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{})
	failing := testenv.StartWebhook(t, testenv.WebhookOptions{Unsigned: true})
	failing.Respond(func(*testenv.Delivery) (int, http.Header) { return 503, nil })
	g := startGateway(t, gatewayOptions{
		NATSURL: c.URL, NATSCredentials: u.SeedFiles["gateway"], Replicas: 3,
		Config: notifyConfig([]*testenv.Webhook{hook, failing},
			"format: standard, secret_env: HOOK_SECRET, events: [request.created, request.approved, statement.denied, grant.revoked]",
			"name: failing, format: slack, events: [request.created]"),
		Env: []string{"HOOK_SECRET=" + hook.Secret},
	})
	var iss control.Issued
	g.CLIJSON(&iss, "agent-1", "request", "--resource", "demo-pg", "--task", "permissions", "--access", "read")
	waitType(t, hook, "request.created", iss.Grant.ID)
	g.MustCLI("alice", "grants", "approve", iss.Grant.ID)
	if out, _ := g.psql("agent-1", iss.Token, "demo-pg", "delete from orders;\n"); !strings.Contains(out, "ERROR") {
		t.Fatalf("delete not refused:\n%s", out)
	}
	waitType(t, hook, "statement.denied", iss.Grant.ID)
	g.MustCLI("alice", "grants", "revoke", iss.Grant.ID)
	waitType(t, hook, "grant.revoked", iss.Grant.ID)
	var st control.NotifyReport
	g.CLIJSON(&st, "alice", "notify", "status")
	if len(st.Targets) != 2 || st.Targets[0].Delivered < 3 || st.Targets[1].Pending != 1 || st.Targets[1].OldestPending == nil {
		t.Errorf("status: %+v", st)
	}
	if logs := g.Log(); strings.Contains(strings.ToLower(logs), "permissions violation") || strings.Contains(logs, "authorization violation") {
		t.Errorf("the gateway was refused something:\n%s", logs)
	}
}

// TestNotifySSHDenied: an SSH command outside the grant is notified as
// statement.denied, with the command and its rule, linking to its
// session.
func TestNotifySSHDenied(t *testing.T) {
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{})
	g := startGateway(t, gatewayOptions{
		SSH:    true,
		Config: notifyConfig([]*testenv.Webhook{hook}, "format: standard, secret_env: HOOK_SECRET, events: [statement.denied]"),
		Env:    []string{"HOOK_SECRET=" + hook.Secret},
	})
	iss := g.sshGrant("box", "INC-13: uname only", "--command", "uname")
	r := g.sshAs("box", g.keyAuth(), "", "touch", "/tmp/airlock-notify-marker")
	if r.code != 126 {
		t.Fatalf("refused exec: exit %d, stderr %q", r.code, r.stderr)
	}
	d := waitType(t, hook, "statement.denied", iss.Grant.ID).Data
	if d.Resource != "box" || d.Protocol != "ssh" || !strings.Contains(d.Statement, "touch") || d.Rule == "" ||
		d.URL != publicURL+"/ui/sessions/"+d.Session || d.Task != "INC-13: uname only" {
		t.Errorf("statement.denied: %+v", d)
	}
}

// TestNotifyHeld: a statement its grant holds is announced as
// statement.held once the hold is stored, with the text, the prepared
// parameters, the rule, the hold id and its console page, while the
// client still waits; deciding it there (here from the CLI) answers the
// client.
func TestNotifyHeld(t *testing.T) {
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{})
	g := startGateway(t, gatewayOptions{
		Config: notifyConfig([]*testenv.Webhook{hook}, "format: standard, secret_env: HOOK_SECRET, events: [statement.held]"),
		Env:    []string{"HOOK_SECRET=" + hook.Secret},
	})
	grant, tok := grantFor(t, g, "write", "--hold", "DELETE")
	conn := connectPgx(t, g, "agent-1", tok)
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "delete from orders where id = $1", 3)
		errc <- err
	}()
	d := waitType(t, hook, "statement.held", grant).Data
	h := pendingHold(t, g)
	if d.HoldID != h.ID || d.Statement != "delete from orders where id = $1" || !slices.Equal(d.Params, []string{"3"}) ||
		d.Rule == "" || d.Reason == "" || d.Agent != "agent-1" || d.Resource != "demo-pg" || d.Session != h.Session ||
		d.ExpiresAt == nil || !d.ExpiresAt.Equal(h.ExpiresAt) || d.URL != publicURL+"/ui/holds/"+h.ID {
		t.Errorf("statement.held: %+v\nhold: %+v", d, h)
	}
	select {
	case err := <-errc:
		t.Fatalf("the held delete returned before anyone decided: %v", err)
	default:
	}
	g.MustCLI("alice", "holds", "deny", h.ID, "--reason", "not during the freeze")
	var pgErr *pgconn.PgError
	if err := <-errc; !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "not during the freeze") {
		t.Fatalf("denied held delete: %v", err)
	}
	if n := len(onceEach(t, hook)); n != 1 {
		t.Errorf("%d notifications, want the one statement.held", n)
	}
}
