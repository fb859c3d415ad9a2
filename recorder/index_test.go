package recorder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// startIndex runs an index over the harness's stream until the test ends
// and waits for it to have read the history; set changes it before it
// runs.
func startIndex(tb testing.TB, h *harness, set ...func(*Index)) *Index {
	tb.Helper()
	x := NewIndex(h.js, IndexOptions{Stream: testStream})
	for _, f := range set {
		f(x)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = x.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := x.Wait(wctx); err != nil {
		tb.Fatal(err)
	}
	return x
}

// eventually retries check until it passes or 10 s have gone.
func eventually(tb testing.TB, what string, check func() error) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func denyEvent(id uint64, text string) Event {
	ev := stmtEvent(id, text)
	ev.Statement.Decision, ev.Statement.Rule, ev.Statement.Reason = "deny", "access-level", "DELETE needs write access; the grant gives read"
	return ev
}

func pageIDs(p Page) string {
	var b []string
	for _, s := range p.Sessions {
		b = append(b, s.Session)
	}
	return strings.Join(b, ",")
}

func mustQuery(tb testing.TB, x *Index, q Query) Page {
	tb.Helper()
	p, err := x.Query(q)
	if err != nil {
		tb.Fatalf("query %+v: %v", q, err)
	}
	return p
}

func TestIndexFilters(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	at := func(min int) time.Time { return base.Add(time.Duration(min) * time.Minute) }
	commit := func(l *Log) {
		t.Helper()
		if err := l.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	meta := func(agent, resource, grant, task string) Meta {
		m := testMeta(agent, resource)
		m.Grant, m.Task = grant, task
		return m
	}

	// Recorded before the index starts: its history.
	ended := h.rec.Open("ended", meta("agent-1", "orders-db", "g-1", "Fix the ORDERS report"))
	ended.Append(Event{Type: TypeSessionStart, Time: at(0)})
	ended.Append(stmtEvent(1, "SELECT 1"))
	ended.Append(Event{Type: TypeSessionEnd, Time: at(5), End: &End{Reason: "client closed", Statements: 4, Denied: 0}})
	commit(ended)

	deniedEnded := h.rec.Open("denied-ended", meta("agent-1", "orders-db", "g-1", "Fix the ORDERS report"))
	deniedEnded.Append(Event{Type: TypeSessionStart, Time: at(10)})
	deniedEnded.Append(denyEvent(1, "DELETE FROM orders"))
	deniedEnded.Append(Event{Type: TypeSessionEnd, Time: at(11), End: &End{Reason: "client closed", Statements: 1, Denied: 1}})
	commit(deniedEnded)

	open := h.rec.Open("open", meta("agent-2", "shop-mysql", "g-2", "count carts"))
	open.Append(Event{Type: TypeSessionStart, Time: at(20)})
	open.Append(stmtEvent(1, "SELECT 2"))
	open.Append(denyEvent(2, "DROP TABLE carts"))
	commit(open)

	refused := h.rec.Open("refused", Meta{Agent: "agent-1", Resource: "orders-db", Protocol: "postgres", Client: "10.0.0.9:1"})
	refused.Append(Event{Type: TypeAuthFailed, Time: at(30), Auth: &AuthFailure{User: "agent-1", Reason: "bad token"}})
	commit(refused)

	stopped := h.rec.Open("stopped", meta("agent-2", "orders-db", "g-3", "vacuum"))
	stopped.Append(Event{Type: TypeSessionStart, Time: at(40), Start: &Start{Instance: "gi_stopped"}})
	stopped.Append(denyEvent(1, "VACUUM"))
	commit(stopped)
	if _, err := h.rec.Interrupt(ctx, h.rd, "stopped", "gi_stopped", "gi_test", "heartbeat stopped"); err != nil {
		t.Fatal(err)
	}

	x := startIndex(t, h)
	if n := x.Len(); n != 5 {
		t.Fatalf("index lists %d sessions, want 5", n)
	}
	for _, tc := range []struct {
		name string
		q    Query
		want string
	}{
		{"all", Query{}, "stopped,refused,open,denied-ended,ended"},
		{"agent", Query{Agent: "agent-1"}, "refused,denied-ended,ended"},
		{"resource", Query{Resource: "shop-mysql"}, "open"},
		{"grant", Query{Grant: "g-1"}, "denied-ended,ended"},
		{"task substring, case folded", Query{Task: "orders rep"}, "denied-ended,ended"},
		{"state open", Query{State: StatusOpen}, "open"},
		{"state ended", Query{State: StatusEnded}, "denied-ended,ended"},
		{"state interrupted", Query{State: StatusInterrupted}, "stopped"},
		{"state auth_failed", Query{State: StateAuthFailedAlias}, "refused"},
		{"state auth.failed", Query{State: StatusAuthFailed}, "refused"},
		{"since", Query{Since: at(10)}, "stopped,refused,open,denied-ended"},
		{"until", Query{Until: at(20)}, "denied-ended,ended"},
		{"since+until", Query{Since: at(10), Until: at(31)}, "refused,open,denied-ended"},
		{"has denials (ended: end's totals; open and interrupted: counted)", Query{Denied: true}, "stopped,open,denied-ended"},
		{"denials and agent", Query{Denied: true, Agent: "agent-2"}, "stopped,open"},
		{"nobody", Query{Agent: "nobody"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pageIDs(mustQuery(t, x, tc.q)); got != tc.want {
				t.Fatalf("sessions %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := x.Query(Query{State: "closed"}); err == nil {
		t.Error("state closed accepted")
	}

	// The index's summaries are the reader's.
	ss, err := h.rd.Sessions(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	all := mustQuery(t, x, Query{})
	for i, s := range ss {
		got := all.Sessions[i]
		if s.Status == StatusEnded || s.Status == StatusAuthFailed {
			if fmt.Sprint(got) != fmt.Sprint(s) {
				t.Errorf("index %+v\nreader %+v", got, s)
			}
		}
		if got.Session != s.Session || got.Status != s.Status || got.Agent != s.Agent || got.Client != s.Client || !got.Start.Equal(s.Start) {
			t.Errorf("index %+v\nreader %+v", got, s)
		}
	}
	if s, _ := x.Get("open"); s.Statements != 2 || s.Denied != 1 || s.Status != StatusOpen {
		t.Errorf("open session before its end: %+v, want 2 statements, 1 denied", s)
	}
	if s, _ := x.Get("stopped"); s.Denied != 1 || s.Status != StatusInterrupted || s.Interrupted == nil || s.End == nil {
		t.Errorf("interrupted session: %+v", s)
	}

	// Live: a denial in the open session is counted as it arrives; its
	// end replaces the counts with the end's totals.
	open.Append(denyEvent(3, "DROP TABLE orders"))
	commit(open)
	eventually(t, "live denial", func() error {
		if s, _ := x.Get("open"); s.Denied != 2 || s.Statements != 3 {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	open.Append(Event{Type: TypeSessionEnd, Time: at(50), End: &End{Reason: "client closed", Statements: 3, Denied: 2}})
	commit(open)
	eventually(t, "live end", func() error {
		if s, _ := x.Get("open"); s.Status != StatusEnded || s.Denied != 2 || s.End == nil || !s.End.Equal(at(50)) {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	// A new session appears at the top of the list.
	fresh := h.rec.Open("fresh", meta("agent-3", "orders-db", "g-4", "new"))
	fresh.Append(Event{Type: TypeSessionStart, Time: at(60)})
	commit(fresh)
	eventually(t, "live start", func() error {
		if got := pageIDs(mustQuery(t, x, Query{Limit: 1})); got != "fresh" {
			return fmt.Errorf("newest %q", got)
		}
		return nil
	})
}

// TestIndexPaging pages through sessions while newer ones arrive: every
// session is listed once, in order, and the cursor is not moved by them.
func TestIndexPaging(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	record := func(i int) {
		t.Helper()
		l := h.rec.Open(fmt.Sprintf("s-%03d", i), testMeta("agent-1", "orders-db"))
		// Two sessions per second, so some share a start time and the
		// id decides their order.
		l.Append(Event{Type: TypeSessionStart, Time: base.Add(time.Duration(i/2) * time.Second)})
		l.Append(Event{Type: TypeSessionEnd, Time: base.Add(time.Duration(i/2)*time.Second + time.Millisecond), End: &End{Reason: "client closed"}})
		if err := l.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 25 {
		record(i)
	}
	x := startIndex(t, h)

	var got []string
	p := mustQuery(t, x, Query{Limit: 10})
	if pageIDs(p) != "s-024,s-023,s-022,s-021,s-020,s-019,s-018,s-017,s-016,s-015" || p.Next == "" {
		t.Fatalf("page 1: %q next %q", pageIDs(p), p.Next)
	}
	got = append(got, pageIDs(p))
	// Newer sessions arrive between pages.
	for i := 25; i < 30; i++ {
		record(i)
	}
	// Sync: what the stream holds is applied when it returns.
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := x.Sync(sctx); err != nil {
		t.Fatal(err)
	}
	if n := x.Len(); n != 30 {
		t.Fatalf("after Sync the index lists %d sessions, want 30", n)
	}
	for p.Next != "" {
		p = mustQuery(t, x, Query{Limit: 10, Cursor: p.Next})
		got = append(got, pageIDs(p))
	}
	want := []string{
		"s-024,s-023,s-022,s-021,s-020,s-019,s-018,s-017,s-016,s-015",
		"s-014,s-013,s-012,s-011,s-010,s-009,s-008,s-007,s-006,s-005",
		"s-004,s-003,s-002,s-001,s-000",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("pages:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A page that ends exactly at the last match has no next.
	if p := mustQuery(t, x, Query{Limit: 30}); len(p.Sessions) != 30 || p.Next != "" {
		t.Errorf("limit 30 of 30: %d sessions, next %q", len(p.Sessions), p.Next)
	}
	// A filtered walk keeps its filter across pages.
	p = mustQuery(t, x, Query{Limit: 2, Until: base.Add(2 * time.Second)})
	if pageIDs(p) != "s-003,s-002" {
		t.Fatalf("until page 1: %q", pageIDs(p))
	}
	p = mustQuery(t, x, Query{Limit: 2, Until: base.Add(2 * time.Second), Cursor: p.Next})
	if pageIDs(p) != "s-001,s-000" || p.Next != "" {
		t.Fatalf("until page 2: %q next %q", pageIDs(p), p.Next)
	}
	for _, c := range []string{"nonsense!", "bm90LWEtY3Vyc29y"} {
		if _, err := x.Query(Query{Cursor: c}); !errors.Is(err, ErrBadCursor) {
			t.Errorf("cursor %q: %v, want ErrBadCursor", c, err)
		}
	}
}

// TestIndexUnapplied checks what Sync asks the stream once the live
// consumer reports nothing pending (a count the server updates only after
// the store is acknowledged): whether a message of the index's subjects
// lies after the last applied and no later than what the stream held
// when Sync began; messages of other subjects (an SSH session's data)
// and later ones do not count.
// TestIndexFollowPaced: once a message has arrived, the index takes what
// gathers after it in one request a pace later, not message by message as
// they are stored; a Sync cuts the pace short. With a pace of an hour,
// 300 statements stored after a session's start are applied by the Sync
// that waits for them, in at most three requests that brought messages.
func TestIndexFollowPaced(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	x := startIndex(t, h, func(x *Index) { x.pace = time.Hour })
	ctx := context.Background()
	l := h.rec.Open("s-paced", testMeta("agent-1", "web-1"))
	l.Append(Event{Type: TypeSessionStart})
	const n = 300
	for i := range n {
		l.Append(stmtEvent(uint64(i+1), "SELECT 1"))
		if err := l.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := x.Sync(sctx); err != nil {
		t.Fatalf("sync: %v", err)
	}
	s, ok := x.Get("s-paced")
	if !ok || s.Statements != n {
		t.Fatalf("after sync: %+v (found %v), want %d statements", s, ok, n)
	}
	if takes := x.takes.Load(); takes > 3 {
		t.Errorf("%d requests brought messages, want at most 3", takes)
	}
	t.Logf("sync took %s; %d requests brought messages", time.Since(start).Round(time.Millisecond), x.takes.Load())
}

func TestIndexUnapplied(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	x := NewIndex(h.js, IndexOptions{Stream: testStream})
	st, err := h.js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(id string, evs ...Event) {
		t.Helper()
		l := h.rec.Open(id, testMeta("agent-1", "web-1"))
		for _, ev := range evs {
			l.Append(ev)
		}
		if err := l.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	lastSeq := func() uint64 {
		t.Helper()
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	// A session's start, then its data: the data is the stream's last
	// message, not the index's.
	publish("s-1", Event{Type: TypeSessionStart}, Event{Type: TypeData, Data: &Data{ID: 1, Stream: "stdout", Text: "hi"}})
	data := lastSeq()
	start := data - 1
	// A second session's start, after.
	publish("s-2", Event{Type: TypeSessionStart})
	second := lastSeq()
	for _, tc := range []struct {
		name       string
		last, upTo uint64
		wantBehind bool
	}{
		{"the start not applied", start - 1, data, true},
		{"only data after the last applied", start, data, false},
		{"a start after what Sync waits for", start, data, false},
		{"that start within it", data, second, true},
		{"everything applied", second, second, false},
		{"applied past what Sync waits for", second, data, false},
	} {
		got, err := x.unapplied(ctx, x.feeds[0], st, tc.last, tc.upTo)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.wantBehind {
			t.Errorf("%s (last %d, up to %d): behind %v, want %v", tc.name, tc.last, tc.upTo, got, tc.wantBehind)
		}
	}
}

// TestIndexApply covers what arrives out of the ordinary: a session whose
// refused login comes before its start, a republished statement, a
// message replayed from before the last applied.
func TestIndexApply(t *testing.T) {
	x := NewIndex(nil, IndexOptions{Stream: testStream})
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	seq := uint64(0)
	apply := func(ev Event) {
		t.Helper()
		seq++
		ev.V, ev.Session = Version, "s1"
		if ev.Meta.Agent == "" {
			ev.Meta = testMeta("a", "r")
		}
		b, err := json.Marshal(&ev)
		if err != nil {
			t.Fatal(err)
		}
		x.Apply(DefaultSubjectPrefix+".s1."+Kind(ev.Type), b, seq)
	}
	apply(Event{Type: TypeSessionStart, Seq: 1, Time: t0})
	d := denyEvent(1, "DROP TABLE t")
	d.Seq = 2
	apply(d)
	apply(d) // stored twice: counted once
	x.Apply(DefaultSubjectPrefix+".s1.stmt", []byte(`{not json`), seq+1)
	seq++
	s, ok := x.Get("s1")
	if !ok || s.Statements != 1 || s.Denied != 1 || s.Status != StatusOpen {
		t.Fatalf("%+v %v", s, ok)
	}
	// Statements read out of order count once each, within stmtWindow
	// of the latest: 70 and 8 count, 6 is taken for a copy already
	// counted (64 behind), and 8 again is one.
	for _, seq := range []uint64{70, 8, 6, 8} {
		st := stmtEvent(seq, "SELECT 1")
		st.Seq = seq
		apply(st)
	}
	if s, _ := x.Get("s1"); s.Statements != 3 || s.Denied != 1 {
		t.Fatalf("after statements out of order: %+v", s)
	}
	// An old stream sequence again: ignored.
	b, _ := json.Marshal(&Event{V: Version, Type: TypeSessionEnd, Session: "s1", Seq: 3, Time: t0, End: &End{Reason: "x"}})
	x.Apply(DefaultSubjectPrefix+".s1.end", b, 1)
	if s, _ := x.Get("s1"); s.Status != StatusOpen {
		t.Fatalf("replayed old message applied: %+v", s)
	}
}

func TestPeekSessionSeq(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{`{"v":4,"type":"statement","session":"ses_a","seq":17,"time":"x"}`, 17, true},
		{`{"v":4,"type":"session.end","session":"ses_a","seq":3}`, 3, true},
		{`{"v":4, "type":"statement","session":"ses_a","seq":17}`, 0, false},
		{`{"v":4,"type":"st\\"x","session":"ses_a","seq":17}`, 0, false},
		{`{"v":4,"type":"statement","session":"ses_a","seq":1x}`, 0, false},
		{`{"type":"statement","v":4,"session":"ses_a","seq":17}`, 0, false},
	} {
		session, got, ok := peekSessionSeq([]byte(tc.in))
		if got != tc.want || ok != tc.ok || ok && string(session) != "ses_a" {
			t.Errorf("%s: %q %d %v, want ses_a %d %v", tc.in, session, got, ok, tc.want, tc.ok)
		}
	}
	// It agrees with the full decoding on what the gateway writes.
	b, _ := json.Marshal(&Event{V: Version, Type: TypeStatement, Session: "ses_abc", Seq: 123456, Statement: &Statement{Text: `"seq":9`}})
	if session, n, ok := peekSessionSeq(b); !ok || n != 123456 || string(session) != "ses_abc" {
		t.Errorf("%s: %q %d %v", b, session, n, ok)
	}
}

// TestPeekStmt: the index's scan of a statement event agrees with
// decoding it, whatever the statement's text holds.
func TestPeekStmt(t *testing.T) {
	for _, tc := range []struct {
		name, text, decision string
	}{
		{"allowed", "SELECT 1", "allow"},
		{"denied", "DELETE FROM orders", "deny"},
		{"allowed, text spelling a denial", `SELECT '"decision":"deny"', '"statement":{'`, "allow"},
	} {
		ev := stmtEvent(7, tc.text)
		ev.Session, ev.Seq, ev.Statement.Decision = "ses_0000000000000009", 7, tc.decision
		body, err := Canonical(&ev)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := peekStmt(body)
		want := indexStmt{session: ev.Session, seq: 7, denied: tc.decision == "deny"}
		if !ok || got != want {
			t.Errorf("%s: peekStmt = %+v, %v; want %+v", tc.name, got, ok, want)
		}
		// Not as the gateway writes it: decoded, with the same answer.
		spaced := bytes.Replace(body, []byte(`{"v":`), []byte(`{ "v": `), 1)
		if got, ok := peekStmt(spaced); !ok || got != want {
			t.Errorf("%s, not canonical: peekStmt = %+v, %v; want %+v", tc.name, got, ok, want)
		}
	}
	// A statement whose body went to chunks has no statement member here.
	ev := Event{Type: TypeStatement, Session: "ses_0000000000000009", Seq: 8}
	body, _ := Canonical(&ev)
	if _, ok := peekStmt(body); ok {
		t.Errorf("a body without a statement was counted: %s", body)
	}
}
