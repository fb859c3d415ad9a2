package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/recorder"
	"github.com/airlockhq/airlock/testenv"
)

// The example of the Standard Webhooks specification's reference
// libraries: the signer must produce exactly their signature.
func TestSignSpecVector(t *testing.T) {
	key, err := config.DecodeWebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
}

func testGrant() *authz.Grant {
	return &authz.Grant{
		ID: "gr_abc", Agent: "agent-1", Resource: "orders-db", Access: authz.AccessWrite,
		Task: "JIRA-12: fix <!channel> totals & <https://evil.example|click here>", State: authz.StatePending,
		TTL: authz.Duration(30 * time.Minute), Scope: authz.Scope{Tables: []string{"public.orders"}},
	}
}

// slackMsg is the part of Block Kit the tests check.
type slackMsg struct {
	Text   string `json:"text"`
	Blocks []struct {
		Type string `json:"type"`
		Text *struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"text"`
		Fields []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"fields"`
		Elements []struct {
			Type string `json:"type"`
			Text struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"text"`
			URL string `json:"url"`
		} `json:"elements"`
	} `json:"blocks"`
}

// checkSlack checks a body is a Block Kit message within Slack's limits,
// with the button to url, and returns it.
func checkSlack(t *testing.T, body []byte, url string) *slackMsg {
	t.Helper()
	var m slackMsg
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("slack body is not JSON: %v\n%s", err, body)
	}
	if m.Text == "" || len(m.Blocks) == 0 || len(m.Blocks) > 50 {
		t.Fatalf("slack body wants text and 1..50 blocks: %s", body)
	}
	button := false
	for _, b := range m.Blocks {
		switch b.Type {
		case "header":
			if b.Text == nil || b.Text.Type != "plain_text" || len([]rune(b.Text.Text)) > 150 || b.Text.Text == "" {
				t.Fatalf("header block: %s", body)
			}
		case "section":
			if b.Text == nil && len(b.Fields) == 0 {
				t.Fatalf("section without text or fields: %s", body)
			}
			if b.Text != nil && (b.Text.Type != "mrkdwn" || len(b.Text.Text) > 3000) {
				t.Fatalf("section text: %s", body)
			}
			if len(b.Fields) > 10 {
				t.Fatalf("%d fields", len(b.Fields))
			}
			for _, f := range b.Fields {
				if f.Type != "mrkdwn" || len(f.Text) > 2000 || f.Text == "" {
					t.Fatalf("field %q", f.Text)
				}
			}
		case "actions":
			for _, e := range b.Elements {
				if e.Type == "button" && e.Text.Type == "plain_text" && e.Text.Text == "Review in airlock" && e.URL == url {
					button = true
				}
			}
		default:
			t.Fatalf("unexpected block type %q", b.Type)
		}
	}
	if !button {
		t.Fatalf("no \"Review in airlock\" button to %s: %s", url, body)
	}
	return &m
}

func TestSlackBody(t *testing.T) {
	n := FromGrant(RequestCreated, testGrant(), "https://airlock.example.com/", time.Now())
	b, err := SlackBody(n)
	if err != nil {
		t.Fatal(err)
	}
	m := checkSlack(t, b, "https://airlock.example.com/ui/requests/gr_abc")
	all := decodedText(t, b)
	for _, bad := range []string{"<!channel>", "<https://evil.example|click here>", " & "} {
		if strings.Contains(all, bad) {
			t.Errorf("agent text %q reached Slack unescaped: %s", bad, all)
		}
	}
	if !strings.Contains(m.Blocks[1].Text.Text, "&lt;!channel&gt; totals &amp; &lt;https://evil.example|click here&gt;") {
		t.Errorf("task not escaped as expected: %q", m.Blocks[1].Text.Text)
	}
	for _, f := range []string{"*Agent*\nagent-1", "*Resource*\norders-db", "*Access*\nwrite"} {
		found := false
		for _, x := range m.Blocks[1].Fields {
			found = found || x.Text == f
		}
		if !found {
			t.Errorf("no field %q in %s", f, b)
		}
	}

	// Long text is cut within Slack's limits, never inside an escape.
	g := testGrant()
	g.Task = strings.Repeat("<&>", 400)
	g.Agent = strings.Repeat("a", 300)
	ev := FromGrant(RequestCreated, g, "https://airlock.example.com", time.Now())
	b, err = SlackBody(ev)
	if err != nil {
		t.Fatal(err)
	}
	m = checkSlack(t, b, "https://airlock.example.com/ui/requests/gr_abc")
	txt := m.Blocks[1].Text.Text
	if !strings.HasSuffix(txt, "…") || strings.HasSuffix(strings.TrimSuffix(txt, "…"), "&") || strings.HasSuffix(strings.TrimSuffix(txt, "…"), "&l") {
		t.Errorf("cut text ends %q", txt[len(txt)-12:])
	}
}

func TestStatementText(t *testing.T) {
	s := strings.Repeat("é", MaxStatementText) // 2 bytes each
	got, cutOff := cut(s, MaxStatementText)
	if !cutOff || len(got) != MaxStatementText || !strings.HasSuffix(got, "é") {
		t.Fatalf("cut to %d bytes, cut %v", len(got), cutOff)
	}
}

func connect(t *testing.T, url string) *natsconn.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, natsconn.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	// The events stream the notifier follows.
	if _, err := nc.JS.CreateOrUpdateStream(ctx, jsStream("EV", "ev.>")); err != nil {
		t.Fatal(err)
	}
	return nc
}

type grantList struct {
	mu sync.Mutex
	gs []*authz.Grant
}

func (l *grantList) List(keep func(*authz.Grant) bool) []*authz.Grant {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*authz.Grant
	for _, g := range l.gs {
		if keep(g) {
			c := *g
			out = append(out, &c)
		}
	}
	return out
}

func tgt(name, url, format, secretEnv string, events ...string) config.NotifyTarget {
	return config.NotifyTarget{
		Name: name, URL: url, Format: format, SecretEnv: secretEnv, Events: events,
		Timeout: time.Second, RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, RetryFor: 24 * time.Hour,
	}
}

func open(t *testing.T, nc *natsconn.Conn, grants Grants, ts ...config.NotifyTarget) *Notifier {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := Open(ctx, Options{
		JS: nc.JS, Targets: ts, ConsoleURL: "https://airlock.example.com",
		EventsStream: "EV", EventsPrefix: "ev", Replicas: 1, Grants: grants,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	t.Cleanup(n.Close)
	return n
}

// A standard target gets signed notifications its receiver verifies; 503
// and 429 are retried with the same webhook-id until a 2xx, Retry-After
// is honoured, and a 410 gives up and shows in the status without the
// URL's path.
func TestDeliveryStandard(t *testing.T) {
	srv := testenv.StartNATS(t, testenv.NATSOptions{})
	nc := connect(t, srv.URL)
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{})
	t.Setenv("TEST_HOOK_SECRET", hook.Secret)
	var mu sync.Mutex
	answers := map[string][]int{} // webhook-id -> statuses still to answer
	hook.Respond(func(d *testenv.Delivery) (int, http.Header) {
		mu.Lock()
		defer mu.Unlock()
		q := answers[d.ID]
		if len(q) == 0 {
			return 204, nil
		}
		answers[d.ID] = q[1:]
		if q[0] == 429 {
			return 429, http.Header{"Retry-After": {"1"}}
		}
		return q[0], nil
	})
	answers[idFor(RequestCreated, "gr_503")] = []int{503, 503}
	answers[idFor(RequestCreated, "gr_429")] = []int{429}
	answers[idFor(RequestCreated, "gr_410")] = []int{410}
	n := open(t, nc, nil, tgt("hook", hook.URL, "standard", "TEST_HOOK_SECRET", RequestCreated, RequestApproved))

	for _, id := range []string{"gr_ok", "gr_503", "gr_429", "gr_410"} {
		g := testGrant()
		g.ID = id
		n.Grant(RequestCreated, g)
	}
	n.Grant(GrantRevoked, testGrant()) // not asked for by the target

	ok := hook.WaitFor(15*time.Second, func(ds []*testenv.Delivery) bool {
		done := map[string]bool{}
		for _, d := range ds {
			if d.Status < 300 {
				done[d.ID] = true
			}
		}
		return len(done) == 3
	})
	if !ok {
		t.Fatalf("not delivered: %d received, rejected %v", len(hook.Received()), hook.Rejected())
	}
	if r := hook.Rejected(); len(r) > 0 {
		t.Fatalf("receiver refused signatures: %v", r)
	}
	byID := map[string][]*testenv.Delivery{}
	for _, d := range hook.Received() {
		byID[d.ID] = append(byID[d.ID], d)
	}
	if got := len(byID[idFor(RequestCreated, "gr_503")]); got != 3 {
		t.Errorf("gr_503: %d attempts, want 3", got)
	}
	at := byID[idFor(RequestCreated, "gr_429")]
	if len(at) != 2 || at[1].At.Sub(at[0].At) < 900*time.Millisecond {
		t.Errorf("gr_429: %d attempts; Retry-After: 1 not honoured", len(at))
	}
	if len(byID[idFor(RequestCreated, "gr_410")]) != 1 {
		t.Errorf("gr_410 attempted %d times, want once", len(byID[idFor(RequestCreated, "gr_410")]))
	}
	for id := range byID {
		if strings.Contains(id, "gr_abc") {
			t.Errorf("grant.revoked was sent to a target that did not ask for it")
		}
	}
	var body struct {
		Type      string    `json:"type"`
		Timestamp time.Time `json:"timestamp"`
		Data      Data      `json:"data"`
	}
	if err := byID[idFor(RequestCreated, "gr_ok")][0].Decode(&body); err != nil {
		t.Fatal(err)
	}
	d := body.Data
	if body.Type != RequestCreated || body.Timestamp.IsZero() || d.RequestID != "gr_ok" || d.GrantID != "gr_ok" || d.Agent != "agent-1" ||
		d.Resource != "orders-db" || d.Access != "write" || d.Task != testGrant().Task || d.URL != "https://airlock.example.com/ui/requests/gr_ok" {
		t.Errorf("body: %+v", body)
	}

	// The status is eventually 3 delivered, 1 given up, nothing pending.
	var st []TargetStatus
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		st, err = n.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st[0].Delivered == 3 && st[0].GivenUp == 1 && st[0].Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status: %+v", st[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := st[0]
	if s.LastSuccess == nil || len(s.GaveUp) != 1 || !strings.Contains(s.GaveUp[0].Error, "410") || s.Notifications != 4 {
		t.Errorf("status: %+v", s)
	}
	b, _ := json.Marshal(st)
	if strings.Contains(string(b), "SECRETPATH") || strings.Contains(string(b), "/hook/") {
		t.Errorf("status shows the URL's path: %s", b)
	}
}

// The receiver refuses requests that are not signed with its key: the
// tests' checks can fail.
func TestReceiverRefusesBadSignature(t *testing.T) {
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{})
	body := []byte(`{"type":"request.created"}`)
	now := time.Now()
	for name, sig := range map[string]string{
		"other key":  Sign([]byte("another key of twenty-four+ bytes"), "msg_1", now, body),
		"other body": Sign(hook.Key, "msg_1", now, []byte(`{}`)),
		"old":        Sign(hook.Key, "msg_1", now.Add(-10*time.Minute), body),
	} {
		ts := now
		if name == "old" {
			ts = now.Add(-10 * time.Minute)
		}
		req, _ := http.NewRequest("POST", hook.URL, bytes.NewReader(body))
		req.Header.Set("webhook-id", "msg_1")
		req.Header.Set("webhook-timestamp", strings.TrimSpace(itoa(ts.Unix())))
		req.Header.Set("webhook-signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("%s: receiver answered %d", name, resp.StatusCode)
		}
	}
	if len(hook.Received()) != 0 || len(hook.Rejected()) != 3 {
		t.Fatalf("received %d, rejected %v", len(hook.Received()), hook.Rejected())
	}
}

func itoa(n int64) string { return uitoa(uint64(n)) }

// Two notifiers (two replicas) on one NATS both notice a grant's expiry
// and both are told of a request: the target receives each once.
func TestTwoReplicasOneDelivery(t *testing.T) {
	srv := testenv.StartNATS(t, testenv.NATSOptions{})
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{})
	t.Setenv("TEST_HOOK_SECRET", hook.Secret)
	g := testGrant()
	g.ID, g.State, g.ExpiresAt = "gr_exp", authz.StateActive, time.Now().Add(1500*time.Millisecond)
	// Facts no Grant call announced, as when the gateway that served them
	// died at once: the replicas' grant watchers find them.
	w := testGrant()
	w.ID, w.RequestedBy, w.RequestedAt = "gr_watch", w.Agent, time.Now()
	den := testGrant()
	den.ID, den.RequestedBy, den.RequestedAt = "gr_den", den.Agent, time.Now().Add(-time.Minute)
	den.State, den.DecidedBy, den.DecidedAt = authz.StateDenied, "alice", time.Now()
	old := testGrant()
	old.ID, old.RequestedBy, old.RequestedAt = "gr_old", old.Agent, time.Now().Add(-time.Hour)
	grants := &grantList{gs: []*authz.Grant{g, w, den, old}}
	tg := tgt("hook", hook.URL, "standard", "TEST_HOOK_SECRET", RequestCreated, RequestDenied, GrantExpired)
	a := open(t, connect(t, srv.URL), grants, tg)
	b := open(t, connect(t, srv.URL), grants, tg)
	for i := range 20 {
		r := testGrant()
		r.ID = "gr_r" + itoa(int64(i))
		a.Grant(RequestCreated, r)
		b.Grant(RequestCreated, r) // the same fact noticed twice
	}
	const want = 20 + 1 + 3 // requests, the expiry, the watcher's
	if !hook.WaitFor(15*time.Second, func(ds []*testenv.Delivery) bool { return len(ds) >= want }) {
		t.Fatalf("received %d of %d", len(hook.Received()), want)
	}
	time.Sleep(2 * time.Second) // room for a duplicate
	seen := map[string]int{}
	for _, d := range hook.Received() {
		seen[d.ID]++
	}
	if len(seen) != want {
		t.Errorf("%d distinct notifications, want %d: %v", len(seen), want, seen)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s delivered %d times", id, k)
		}
	}
	for _, id := range []string{idFor(GrantExpired, "gr_exp"), idFor(RequestCreated, "gr_watch"), idFor(RequestCreated, "gr_den"), idFor(RequestDenied, "gr_den")} {
		if seen[id] != 1 {
			t.Errorf("%s not delivered once: %v", id, seen)
		}
	}
}

// A slack target gets a Block Kit body; its receiver checks nothing but
// the structure.
func TestDeliverySlack(t *testing.T) {
	srv := testenv.StartNATS(t, testenv.NATSOptions{})
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{Unsigned: true})
	hook.Respond(func(*testenv.Delivery) (int, http.Header) { return 200, nil })
	n := open(t, connect(t, srv.URL), nil, tgt("slack", hook.URL, "slack", "", RequestDenied))
	g := testGrant()
	g.State, g.DecidedBy = authz.StateDenied, "alice"
	n.Grant(RequestDenied, g)
	if !hook.WaitFor(10*time.Second, func(ds []*testenv.Delivery) bool { return len(ds) == 1 }) {
		t.Fatal("nothing received")
	}
	d := hook.Received()[0]
	if d.Header.Get("webhook-signature") != "" {
		t.Errorf("a slack target got a signature header")
	}
	m := checkSlack(t, d.Body, "https://airlock.example.com/ui/requests/gr_abc")
	if !strings.Contains(m.Blocks[0].Text.Text, "denied") {
		t.Errorf("header %q", m.Blocks[0].Text.Text)
	}
}

func jsStream(name, subjects string) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: name, Subjects: []string{subjects}}
}

// Interrupted sessions are found on the events stream; denied statements
// are announced by the session (StatementDenied), not read from the
// stream, so the stream's statements cost nothing; allowed statements and
// other events are not notified.
func TestFromEvents(t *testing.T) {
	srv := testenv.StartNATS(t, testenv.NATSOptions{})
	nc := connect(t, srv.URL)
	hook := testenv.StartWebhook(t, testenv.WebhookOptions{})
	t.Setenv("TEST_HOOK_SECRET", hook.Secret)
	n := open(t, nc, nil, tgt("hook", hook.URL, "standard", "TEST_HOOK_SECRET", StatementDenied, SessionInterrupted))
	meta := recorder.Meta{Agent: "agent-1", Task: "t", Grant: "gr_1", Resource: "demo-pg", Protocol: "postgres", Access: "read"}
	long := "DELETE FROM orders WHERE note = '" + strings.Repeat("x", 2*MaxStatementText) + "'"
	var evs []recorder.Event
	for i := range 250 { // allowed statements: the consumer does not read them
		evs = append(evs, recorder.Event{Type: recorder.TypeStatement, Session: "ses_z", Seq: uint64(i + 2), Meta: meta, Statement: &recorder.Statement{Text: "SELECT 1", Decision: "allow", Rule: "read"}})
	}
	evs = append(evs, []recorder.Event{
		{Type: recorder.TypeStatement, Session: "ses_a", Seq: 2, Meta: meta, Statement: &recorder.Statement{Text: "SELECT 1", Decision: "allow", Rule: "read"}},
		{Type: recorder.TypeStatement, Session: "ses_a", Seq: 3, Meta: meta, Statement: &recorder.Statement{ID: 2, Text: long, Decision: "deny", Rule: "access", Reason: "write needs access write"}},
		{Type: recorder.TypeSessionEnd, Session: "ses_a", Seq: 4, Meta: meta, End: &recorder.End{Reason: "client"}},
		{Type: recorder.TypeSessionInterrupted, Session: "ses_b", Seq: 9, Meta: meta, Interrupted: &recorder.Interruption{Reason: "instance silent"}},
		{Type: recorder.TypeStatement, Session: "ses_a", Seq: 5, Meta: meta, Statement: &recorder.Statement{Text: "SELECT 2", Decision: "allow", Rule: "read"}},
	}...)
	for _, ev := range evs {
		ev.Time = time.Now()
		b, _ := json.Marshal(ev)
		if _, err := nc.JS.Publish(context.Background(), "ev."+ev.Session+"."+recorder.Kind(ev.Type), b); err != nil {
			t.Fatal(err)
		}
	}
	denied := evs[len(evs)-4]
	n.StatementDenied(&denied)
	if !hook.WaitFor(10*time.Second, func(ds []*testenv.Delivery) bool { return len(ds) >= 2 }) {
		t.Fatalf("received %d", len(hook.Received()))
	}
	time.Sleep(500 * time.Millisecond)
	ds := hook.Received()
	if ds[0].ID != idFor(StatementDenied, "ses_a", "2") && ds[1].ID != idFor(StatementDenied, "ses_a", "2") {
		t.Errorf("statement.denied id is not its session and statement id: %s, %s", ds[0].ID, ds[1].ID)
	}
	if len(ds) != 2 {
		t.Fatalf("received %d notifications, want 2", len(ds))
	}
	got := map[string]Data{}
	for _, d := range ds {
		var body struct {
			Type string `json:"type"`
			Data Data   `json:"data"`
		}
		if err := d.Decode(&body); err != nil {
			t.Fatal(err)
		}
		got[body.Type] = body.Data
	}
	sd := got[StatementDenied]
	if sd.Session != "ses_a" || sd.Rule != "access" || sd.Reason != "write needs access write" || !sd.StatementTruncated ||
		len(sd.Statement) != MaxStatementText || sd.URL != "https://airlock.example.com/ui/sessions/ses_a" || sd.GrantID != "gr_1" {
		t.Errorf("statement.denied: %+v", sd)
	}
	if si := got[SessionInterrupted]; si.Session != "ses_b" || si.Reason != "instance silent" || si.URL != "https://airlock.example.com/ui/sessions/ses_b" {
		t.Errorf("session.interrupted: %+v", si)
	}
	// The consumer read the interruption only, and acknowledged it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := n.events.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending == 0 && info.NumPending == 0 && info.Delivered.Consumer == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events consumer: %d pending, %d unacknowledged, %d delivered (want the interruption only)", info.NumPending, info.NumAckPending, info.Delivered.Consumer)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Every notification type makes a valid Block Kit message with its link.
func TestSlackBodyEveryType(t *testing.T) {
	g := testGrant()
	g.DecidedBy, g.RevokedBy, g.ExpiresAt = "alice", "bob", time.Now()
	pages := map[string]string{RequestCreated: "requests", RequestApproved: "grants", RequestDenied: "requests", GrantRevoked: "grants", GrantExpired: "grants"}
	for typ, page := range pages {
		b, err := SlackBody(FromGrant(typ, g, "https://a.example", time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		checkSlack(t, b, "https://a.example/ui/"+page+"/gr_abc")
	}
	meta := recorder.Meta{Agent: "agent-1", Task: "<@U123> please", Grant: "gr_1", Resource: "box", Protocol: "ssh"}
	for _, ev := range []*recorder.Event{
		{Type: recorder.TypeStatement, Session: "ses_s", Seq: 3, Meta: meta, Statement: &recorder.Statement{Text: "rm -rf / ```<script>```", Decision: "deny", Rule: "ssh.command", Reason: "not allowed"}},
		{Type: recorder.TypeSessionInterrupted, Session: "ses_s", Seq: 9, Meta: meta, Interrupted: &recorder.Interruption{Reason: "gone"}},
	} {
		b, err := SlackBody(FromEvent(ev, "https://a.example"))
		if err != nil {
			t.Fatal(err)
		}
		checkSlack(t, b, "https://a.example/ui/sessions/ses_s")
		if txt := decodedText(t, b); strings.Contains(txt, "<@U123>") || strings.Contains(txt, "<script>") || !strings.Contains(txt, "&lt;@U123&gt;") {
			t.Errorf("unescaped: %s", txt)
		}
	}
}

// decodedText is every string of a JSON body, decoded (json.Marshal
// writes < > & as \u escapes, which Slack decodes before reading mrkdwn).
func decodedText(t *testing.T, body []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			b.WriteString(x + "\n")
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return b.String()
}

// TestFromHold: a held message is announced with its statements' text,
// the rule that held it, its parameters and its console page; in Slack
// every part written by the agent is escaped.
func TestFromHold(t *testing.T) {
	at := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	h := &authz.Hold{ID: "hold_x1", Session: "ses_s", Grant: "gr_1", Agent: "agent-1", Resource: "demo-pg", Task: "<!here> cleanup",
		CreatedAt: at, ExpiresAt: at.Add(5 * time.Minute), State: authz.HoldPending,
		Statements: []authz.HeldStatement{
			{Text: "select 1", Kind: "SELECT"},
			{Text: "delete from t where x = $1 -- <script>", Kind: "DELETE", Hold: true, Rule: "hold-kind", Reason: "DELETE is held", Params: []string{"<b>7</b>"}},
		}}
	n := FromHold(h, "https://a.example")
	d := n.Data
	if n.Type != StatementHeld || n.ID != "msg_statement_held_hold_x1" || !n.Time.Equal(at) || d.HoldID != "hold_x1" || d.GrantID != "gr_1" ||
		d.Statement != "select 1; delete from t where x = $1 -- <script>" || d.Rule != "hold-kind" || d.Reason != "DELETE is held" ||
		len(d.Params) != 1 || d.ExpiresAt == nil || !d.ExpiresAt.Equal(at.Add(5*time.Minute)) || d.URL != "https://a.example/ui/holds/hold_x1" {
		t.Fatalf("FromHold: %+v", n)
	}
	b, err := SlackBody(n)
	if err != nil {
		t.Fatal(err)
	}
	checkSlack(t, b, "https://a.example/ui/holds/hold_x1")
	txt := decodedText(t, b)
	if strings.Contains(txt, "<script>") || strings.Contains(txt, "<!here>") || strings.Contains(txt, "<b>") || !strings.Contains(txt, "hold_x1") {
		t.Errorf("slack body: %s", txt)
	}
}
