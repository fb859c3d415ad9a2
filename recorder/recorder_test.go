package recorder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/authz"
)

func TestAppendCommitEvents(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	meta := testMeta("agent-1", "orders-db")
	l := h.rec.Open("s-1", meta)

	want := []Event{
		{Type: TypeSessionStart},
		stmtEvent(1, "SELECT * FROM orders"),
		resultEvent(1),
		{Type: TypeStatement, Statement: &Statement{ID: 2, Count: 1, Text: "DELETE FROM orders", Decision: "deny", Rule: "access-level", Reason: "read grant",
			Class: authz.Classification{Kind: "DELETE", Required: authz.AccessWrite, TablesWritten: []string{"public.orders"}}}},
		{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: 2, Denied: 1, DurationMS: 5}},
	}
	for i, ev := range want {
		if seq := l.Append(ev); seq != uint64(i+1) {
			t.Fatalf("append %d: seq %d", i, seq)
		}
		if err := l.Commit(ctx); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
	if p := l.Pending(); p != 0 {
		t.Fatalf("pending %d after commit", p)
	}

	evs, err := h.rd.Events(ctx, "s-1")
	if err != nil {
		t.Fatal(err)
	}
	checkGapless(t, "s-1", evs, len(want))
	wantMeta := meta
	wantMeta.Gateway = "gw-test"
	for i, ev := range evs {
		if ev.Type != want[i].Type || ev.Meta != wantMeta {
			t.Errorf("event %d: type %q meta %+v, want %q %+v", i, ev.Type, ev.Meta, want[i].Type, wantMeta)
		}
		if ev.Time.IsZero() || ev.Time.Location() != time.UTC {
			t.Errorf("event %d: time %v, want set, UTC", i, ev.Time)
		}
	}
	if got := evs[1].Statement; got == nil || got.Text != "SELECT * FROM orders" || got.Class.TablesRead[0] != "public.orders" {
		t.Errorf("statement event: %+v", got)
	}
	if got := evs[2].Result; got == nil || got.Tag != "SELECT 3" || *got.Rows != 3 {
		t.Errorf("result event: %+v", got)
	}
	if got := evs[4].End; got == nil || got.Statements != 2 || got.Denied != 1 {
		t.Errorf("end event: %+v", got)
	}

	if s := Summarize(evs); s.Session != "s-1" || s.Status != StatusEnded || s.Statements != 2 || s.Denied != 1 || s.Agent != "agent-1" {
		t.Errorf("summary: %+v", s)
	}

	// Each kind goes to its own subject, which is what the CLI filters on.
	st, err := h.js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	for seq, subj := range map[uint64]string{
		1: "airlock.events.s-1.start", 2: "airlock.events.s-1.stmt",
		3: "airlock.events.s-1.result", 5: "airlock.events.s-1.end",
	} {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != subj || m.Header.Get(jetstream.MsgIDHeader) != fmt.Sprintf("s-1-%d", seq) {
			t.Errorf("stream seq %d: subject %q msg-id %q", seq, m.Subject, m.Header.Get(jetstream.MsgIDHeader))
		}
	}
}

func TestEventTimeKept(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	l := h.rec.Open("s-t", testMeta("a", "r"))
	l.Append(Event{Type: TypeSessionStart, Time: at})
	if err := l.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs, err := h.rd.Events(context.Background(), "s-t")
	if err != nil {
		t.Fatal(err)
	}
	if !evs[0].Time.Equal(at) {
		t.Fatalf("time %v, want %v", evs[0].Time, at)
	}
}

func TestSessions(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	commit := func(l *Log) {
		t.Helper()
		if err := l.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// An old session, before the Since mark.
	old := h.rec.Open("old", testMeta("agent-1", "orders-db"))
	old.Append(Event{Type: TypeSessionStart})
	old.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "client closed"}})
	commit(old)
	time.Sleep(5 * time.Millisecond) // stream timestamps must differ from the mark
	mark := time.Now()
	time.Sleep(5 * time.Millisecond)

	ended := h.rec.Open("ended", testMeta("agent-1", "orders-db"))
	ended.Append(Event{Type: TypeSessionStart})
	ended.Append(stmtEvent(1, "SELECT 1"))
	ended.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "grant revoked", Statements: 4, Denied: 1}})
	commit(ended)
	time.Sleep(time.Millisecond)

	open := h.rec.Open("open", testMeta("agent-2", "shop-mysql"))
	open.Append(Event{Type: TypeSessionStart})
	open.Append(stmtEvent(1, "SELECT 2"))
	commit(open)
	time.Sleep(time.Millisecond)

	refused := h.rec.Open("refused", Meta{Agent: "agent-1", Resource: "orders-db", Protocol: "postgres", Client: "10.0.0.9:1"})
	refused.Append(Event{Type: TypeAuthFailed, Auth: &AuthFailure{User: "agent-1", Reason: "bad token"}})
	commit(refused)

	ids := func(ss []Summary) string {
		var b []string
		for _, s := range ss {
			b = append(b, s.Session)
		}
		return strings.Join(b, ",")
	}
	for _, tc := range []struct {
		name string
		o    ListOptions
		want string
	}{
		{"all", ListOptions{}, "refused,open,ended,old"},
		{"since", ListOptions{Since: mark}, "refused,open,ended"},
		{"agent", ListOptions{Agent: "agent-1"}, "refused,ended,old"},
		{"resource", ListOptions{Resource: "shop-mysql"}, "open"},
		{"since+agent", ListOptions{Since: mark, Agent: "agent-1"}, "refused,ended"},
		{"limit", ListOptions{Limit: 2}, "refused,open"},
		{"nobody", ListOptions{Agent: "nobody"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss, err := h.rd.Sessions(ctx, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(ss); got != tc.want {
				t.Fatalf("sessions %q, want %q", got, tc.want)
			}
		})
	}

	ss, err := h.rd.Sessions(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]Summary{}
	for _, s := range ss {
		byID[s.Session] = s
	}
	if s := byID["ended"]; s.Status != StatusEnded || s.EndReason != "grant revoked" || s.Statements != 4 || s.Denied != 1 || s.End == nil || s.Agent != "agent-1" || s.Gateway != "gw-test" {
		t.Errorf("ended: %+v", s)
	}
	if s := byID["open"]; s.Status != StatusOpen || s.End != nil || s.Resource != "shop-mysql" {
		t.Errorf("open: %+v", s)
	}
	if s := byID["refused"]; s.Status != StatusAuthFailed || s.Client != "10.0.0.9:1" || s.Start.IsZero() {
		t.Errorf("refused: %+v", s)
	}
}

func TestReadEmpty(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ss, err := h.rd.Sessions(ctx, ListOptions{})
	if err != nil || len(ss) != 0 {
		t.Fatalf("sessions on empty stream: %v, %v", ss, err)
	}
	l := h.rec.Open("known", testMeta("a", "r"))
	l.Append(Event{Type: TypeSessionStart})
	if err := l.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"unknown", "known-not", "a.b", "*", ">", ""} {
		if _, err := h.rd.Events(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Events(%q): %v, want ErrNotFound", id, err)
		}
	}
	if ss, err := h.rd.Sessions(ctx, ListOptions{Since: time.Now().Add(time.Hour)}); err != nil || len(ss) != 0 {
		t.Fatalf("sessions since the future: %v, %v", ss, err)
	}
	if ctx.Err() != nil {
		t.Fatal("reads did not terminate on their own")
	}
}

func TestConcurrentLogs(t *testing.T) {
	// No checkpoints: the sessions do not end, and the count is exact.
	h := newHarness(t, harnessOptions{SignInterval: time.Hour})
	ctx := context.Background()
	const sessions, perWriter = 50, 50 // two writers per session: 100 events each
	var wg sync.WaitGroup
	errs := make(chan error, sessions*2)
	for s := range sessions {
		l := h.rec.Open(fmt.Sprintf("c-%d", s), testMeta(fmt.Sprintf("agent-%d", s), "orders-db"))
		for w := range 2 {
			wg.Go(func() {
				for i := range perWriter {
					l.Append(stmtEvent(uint64(i), fmt.Sprintf("SELECT %d", w)))
					// Commit every few events, so some Commits wait on
					// several events and on the other writer's.
					if i%3 == 2 || i == perWriter-1 {
						if err := l.Commit(ctx); err != nil {
							errs <- err
							return
						}
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for s := range sessions {
		id := fmt.Sprintf("c-%d", s)
		evs, err := h.rd.Events(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		checkGapless(t, id, evs, 2*perWriter)
		if evs[0].Agent != fmt.Sprintf("agent-%d", s) {
			t.Fatalf("%s: agent %q", id, evs[0].Agent)
		}
	}
	if n := h.streamMsgs(t); n != sessions*2*perWriter {
		t.Fatalf("stream holds %d messages, want %d", n, sessions*2*perWriter)
	}
}

func TestStreamConfig(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	st, err := h.js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if !cfg.DenyDelete || !cfg.DenyPurge || cfg.AllowRollup || cfg.Storage != jetstream.FileStorage ||
		cfg.Discard != jetstream.DiscardNew || cfg.MaxAge != 0 || cfg.MaxBytes != -1 || cfg.MaxMsgs != -1 || cfg.Duplicates != 2*time.Minute ||
		len(cfg.Subjects) != 1 || cfg.Subjects[0] != "airlock.events.>" || cfg.Replicas != 1 {
		t.Fatalf("stream config: %+v", cfg)
	}

	l := h.rec.Open("s-del", testMeta("a", "r"))
	l.Append(Event{Type: TypeSessionStart})
	if err := l.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, 1); err == nil {
		t.Error("deleting an event succeeded")
	}
	if err := st.Purge(ctx); err == nil {
		t.Error("purging the stream succeeded")
	}

	// A second gateway on the same stream uses it as it is.
	if _, err := New(ctx, h.js, Options{Stream: testStream, Signer: h.rec.Signer()}); err != nil {
		t.Fatalf("New on existing stream: %v", err)
	}
	// One with another prefix would record where nothing reads.
	_, err = New(ctx, h.js, Options{Stream: testStream, Subjects: "other.events", Signer: h.rec.Signer()})
	if err == nil || !strings.Contains(err.Error(), testStream) || !strings.Contains(err.Error(), "missing other.events.>") ||
		!strings.Contains(err.Error(), "extra airlock.events.>") {
		t.Fatalf("New with another prefix: %v", err)
	}
	for _, bad := range []string{"a.*", "a..b", "a.>", "a b"} {
		if _, err := New(ctx, h.js, Options{Stream: "X", Subjects: bad, Signer: h.rec.Signer()}); err == nil {
			t.Errorf("prefix %q accepted", bad)
		}
	}
}

func TestInvalidSessionFailsClosed(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	l := h.rec.Open("a.b", testMeta("a", "r"))
	if seq := l.Append(Event{Type: TypeSessionStart}); seq != 1 {
		t.Fatalf("seq %d", seq)
	}
	if err := l.Commit(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("commit: %v, want ErrUnavailable", err)
	}
	if n := h.streamMsgs(t); n != 0 {
		t.Fatalf("%d messages published", n)
	}
}

// TestSessionReuseDetected: a second log with a session id already in the
// stream gets its events dropped as duplicates; that must not pass for
// acknowledged.
func TestSessionReuseDetected(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	first := h.rec.Open("s-reuse", testMeta("a", "r"))
	first.Append(Event{Type: TypeSessionStart})
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	second := h.rec.Open("s-reuse", testMeta("b", "r"))
	second.Append(Event{Type: TypeSessionStart})
	for i := range 2 { // and it stays failed: a republish would ack as duplicate
		if err := second.Commit(ctx); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "already used") {
			t.Fatalf("commit %d of a reused session id: %v", i, err)
		}
	}
	second.Append(stmtEvent(1, "SELECT 1"))
	if err := second.Commit(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("commit after reuse: %v", err)
	}
}

// TestDuplicateAckCounts loses the ack of a stored event and checks that
// the republish is dropped by the stream and counts as acknowledged.
func TestDuplicateAckCounts(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	l := h.rec.Open("s-dup", testMeta("a", "r"))
	l.Append(Event{Type: TypeSessionStart})

	l.mu.Lock()
	e := l.outbox[0]
	a := e.att
	l.mu.Unlock()
	select {
	case <-a.ok: // stored; we take the ack so the Log never sees it
	case err := <-a.errc:
		t.Fatal(err)
	case <-time.After(5 * time.Second):
		t.Fatal("no ack")
	}
	l.mu.Lock()
	lost := &attempt{done: make(chan struct{}), settled: true, err: nats.ErrDisconnected}
	close(lost.done)
	e.att = lost
	l.mu.Unlock()

	if p := l.Pending(); p != 1 {
		t.Fatalf("pending %d, want 1", p)
	}
	if err := l.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := l.Pending(); p != 0 {
		t.Fatalf("pending %d after commit", p)
	}
	if n := h.streamMsgs(t); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
}

// TestCommitServerDown stops the server under a live session: Commit must
// fail within the publish timeout, and once the server is back a later
// Commit must get every event stored exactly once. The short ack timeout
// makes the client give up on the buffered publishes while the server is
// down, so Commit republishes them and the restarted server receives
// several copies of the same Nats-Msg-Id.
func TestCommitServerDown(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	srv := runServer(t, dir, port)
	h := newHarness(t, harnessOptions{
		URL:            serverURL(port),
		PublishTimeout: 300 * time.Millisecond,
		AckTimeout:     100 * time.Millisecond,
	})
	ctx := context.Background()
	l := h.rec.Open("s-down", testMeta("a", "r"))

	l.Append(Event{Type: TypeSessionStart})
	l.Append(stmtEvent(1, "SELECT 1"))
	if err := l.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// In flight when the server goes: their acks may be lost.
	l.Append(resultEvent(1))
	l.Append(stmtEvent(2, "SELECT 2"))
	srv.Shutdown()
	srv.WaitForShutdown()

	// Appended while down: buffered by the client for the reconnect.
	l.Append(stmtEvent(3, "SELECT 3"))
	for i := range 3 {
		start := time.Now()
		err := l.Commit(ctx)
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("commit %d with server down: %v, want ErrUnavailable", i, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("commit %d took %s with a 300ms timeout", i, d)
		}
		l.Append(resultEvent(uint64(i + 2)))
	}
	if p := l.Pending(); p < 4 {
		t.Fatalf("pending %d with server down", p)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Commit(cctx); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("commit with canceled ctx: %v", err)
	}

	runServer(t, dir, port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := l.Commit(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("commit after restart: %v", err)
		}
	}
	if p := l.Pending(); p != 0 {
		t.Fatalf("pending %d after successful commit", p)
	}
	const total = 8
	evs, err := h.rd.Events(ctx, "s-down")
	if err != nil {
		t.Fatal(err)
	}
	checkGapless(t, "s-down", evs, total)
	// The reader hides duplicates; the stream itself must not hold any.
	if n := h.streamMsgs(t); n != total {
		t.Fatalf("stream holds %d messages, want %d", n, total)
	}
}

// TestOutboxCap: past MaxUnacknowledged events Commit fails at once.
func TestOutboxCap(t *testing.T) {
	port := freePort(t)
	srv := runServer(t, t.TempDir(), port)
	h := newHarness(t, harnessOptions{URL: serverURL(port), PublishTimeout: 5 * time.Second})
	srv.Shutdown()
	srv.WaitForShutdown()

	l := h.rec.Open("s-cap", testMeta("a", "r"))
	for range MaxUnacknowledged + 1 {
		l.Append(Event{Type: TypeStatement})
	}
	start := time.Now()
	err := l.Commit(context.Background())
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "more than 10000") {
		t.Fatalf("commit: %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("commit took %s; want immediate", d)
	}
}

func BenchmarkAppendCommit(b *testing.B) {
	h := newHarness(b, harnessOptions{})
	ctx := context.Background()
	l := h.rec.Open("bench", testMeta("agent-1", "orders-db"))
	ev := stmtEvent(1, "SELECT id, total FROM orders WHERE customer_id = $1")
	b.ReportAllocs()
	for b.Loop() {
		l.Append(ev)
		if err := l.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendCommitParallel(b *testing.B) {
	h := newHarness(b, harnessOptions{})
	ctx := context.Background()
	var mu sync.Mutex
	n := 0
	ev := stmtEvent(1, "SELECT id, total FROM orders WHERE customer_id = $1")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		n++
		l := h.rec.Open(fmt.Sprintf("bench-%d", n), testMeta("agent-1", "orders-db"))
		mu.Unlock()
		for pb.Next() {
			l.Append(ev)
			if err := l.Commit(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
