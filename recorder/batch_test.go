package recorder

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// storedMessages returns every message of the stream: subject and body.
func storedMessages(t *testing.T, h *harness, stream string) (subjects []string, bodies [][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := h.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	left := cons.CachedInfo().NumPending
	for left > 0 {
		batch, err := cons.Fetch(int(min(left, 512)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			subjects = append(subjects, m.Subject())
			bodies = append(bodies, m.Data())
			n++
		}
		if n == 0 {
			t.Fatalf("stream %s: %d messages pending, none delivered", stream, left)
		}
		left -= uint64(n)
	}
	return subjects, bodies
}

// TestGroupCommit runs many sessions at once through one group-commit
// publisher: events share messages, each session's events read back
// complete, in seq order and verified, and the session list, the index
// (history and live) and a live follower all see the batched statements.
func TestGroupCommit(t *testing.T) {
	h := newHarness(t, harnessOptions{GroupCommit: true})
	ctx := context.Background()
	const sessions, stmts = 24, 30
	ids := make([]string, sessions)
	logs := make([]*Log, sessions)
	for i := range ids {
		ids[i] = fmt.Sprintf("gc-%02d", i)
		logs[i] = h.rec.Open(ids[i], testMeta("agent-1", "orders-db"))
	}
	// run makes statements in every session at once; odd sessions deny
	// every third.
	run := func(from, to int, end bool) {
		t.Helper()
		var wg sync.WaitGroup
		for i, l := range logs {
			wg.Go(func() {
				if from == 1 {
					l.Append(Event{Type: TypeSessionStart})
				}
				for k := from; k <= to; k++ {
					ev := stmtEvent(uint64(k), fmt.Sprintf("SELECT %d FROM orders -- %s", k, ids[i]))
					if i%2 == 1 && k%3 == 0 {
						ev.Statement.Decision = "deny"
					}
					l.Append(ev)
					if err := l.Commit(ctx); err != nil {
						t.Errorf("%s statement %d: %v", ids[i], k, err)
						return
					}
					l.Result(*resultEvent(uint64(k)).Result)
				}
				if end && i%4 != 0 { // every fourth session stays open
					l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: to}})
				}
				if err := l.Commit(ctx); err != nil {
					t.Errorf("%s: %v", ids[i], err)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	run(1, stmts/2, false)

	// The index reads the history (open sessions' statements from the
	// batches), then follows the rest live.
	x := NewIndex(h.js, IndexOptions{Stream: testStream})
	ictx, stop := context.WithCancel(ctx)
	defer stop()
	go x.Run(ictx)
	if err := x.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if s, ok := x.Get(ids[1]); !ok || s.Statements != stmts/2 || s.Denied != stmts/2/3 {
		t.Fatalf("index after history: %+v (%v), want %d statements, %d denied", s, ok, stmts/2, stmts/2/3)
	}
	// A live follower of an open session sees its batched statements.
	followed := make(chan int, 1)
	fctx, fstop := context.WithTimeout(ctx, 30*time.Second)
	defer fstop()
	go func() {
		n := 0
		_ = h.rd.Follow(fctx, ids[0], func(ev *Event) bool {
			if ev.Type == TypeStatement {
				n++
			}
			return n < stmts
		})
		followed <- n
	}()
	run(stmts/2+1, stmts, true)
	if n := <-followed; n != stmts {
		t.Fatalf("follower of %s saw %d statements, want %d", ids[0], n, stmts)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := x.Sync(sctx); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		s, ok := x.Get(id)
		wantDenied := 0
		if i%2 == 1 {
			wantDenied = stmts / 3
		}
		if i%4 != 0 {
			wantDenied = 0 // an ended session's counts are its end's (Denied 0 here)
		}
		if !ok || s.Statements != stmts || s.Denied != wantDenied {
			t.Fatalf("index, %s: %+v (%v), want %d statements, %d denied", id, s, ok, stmts, wantDenied)
		}
	}

	// The stream holds batches, and fewer messages than events.
	subjects, bodies := storedMessages(t, h, testStream)
	batches, batched, biggest := 0, 0, 0
	for i, subj := range subjects {
		if !isBatch(subj) {
			continue
		}
		if subj != DefaultSubjectPrefix+"."+h.rec.instance+"."+KindBatch {
			t.Fatalf("batch on %s", subj)
		}
		raws, err := splitBatch(bodies[i])
		if err != nil {
			t.Fatal(err)
		}
		batches++
		batched += len(raws)
		biggest = max(biggest, len(raws))
		for _, raw := range raws {
			if typ := peekType(raw); !batchable(typ) {
				t.Fatalf("a %s event in a batch", typ)
			}
		}
	}
	t.Logf("%d messages; %d batches carry %d events (the largest %d)", len(subjects), batches, batched, biggest)
	if batches == 0 || biggest < 2 {
		t.Fatalf("%d batches, the largest of %d events: nothing was batched", batches, biggest)
	}

	// Each session reads back whole and verifies.
	list, err := h.rd.Sessions(ctx, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != sessions {
		t.Fatalf("%d sessions listed, want %d", len(list), sessions)
	}
	for i, id := range ids {
		evs, err := h.rd.Events(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		// start, stmts statements and what carried the outcomes, an end.
		nst := 0
		for k, ev := range evs {
			if ev.Seq != uint64(k+1) || ev.Session != id {
				t.Fatalf("%s: event %d is %s seq %d", id, k, ev.Session, ev.Seq)
			}
			if ev.Type == TypeStatement {
				nst++
			}
		}
		if nst != stmts {
			t.Fatalf("%s: %d statements read back, want %d", id, nst, stmts)
		}
		st, err := h.rd.Stored(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := VerifyOK
		if i%4 == 0 {
			want = VerifyUnterminated
		}
		if r := VerifyStored(id, st.Events, st.Chunks, h.keys); r.Status != want {
			t.Fatalf("%s: %+v, want %s", id, r, want)
		}
	}
}

// TestGroupCommitAfterClose: once the recorder is closed, logs publish
// directly, as before group commit.
func TestGroupCommitAfterClose(t *testing.T) {
	h := newHarness(t, harnessOptions{GroupCommit: true})
	l := h.rec.Open("gc-close", testMeta("agent-1", "orders-db"))
	l.Append(Event{Type: TypeSessionStart})
	mustCommit(t, l)
	h.rec.Close()
	h.rec.Close() // twice is harmless
	l.Append(stmtEvent(1, "SELECT 1"))
	mustCommit(t, l)
	l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: 1}})
	mustCommit(t, l)
	st, err := h.rd.Stored(context.Background(), "gc-close")
	if err != nil {
		t.Fatal(err)
	}
	if r := VerifyStored("gc-close", st.Events, st.Chunks, h.keys); !r.OK() {
		t.Fatalf("%+v", r)
	}
}

// TestVerifyTamperedBatchedStream is TestVerifyTamperedStreamCopy on a
// stream written with batches: each case's events are copied into
// another stream as a gateway with group commit would store them (start
// and end alone on the session's subjects, the rest in batches shared
// with another session's events), and a reader of that copy must report
// what it reports on an unbatched one: an event removed from inside a
// batch, reordered, truncated or forged.
func TestVerifyTamperedBatchedStream(t *testing.T) {
	h := newHarness(t, harnessOptions{GroupCommit: true})
	raws := recordSession(t, h, "s-chain")
	other := recordSession(t, h, "s-other")
	var filler []json.RawMessage
	for _, raw := range other {
		if batchable(peekType(raw)) {
			filler = append(filler, raw)
		}
	}
	forger := testSigner(t)
	for i, tc := range tamperCases(forger) {
		if tc.fileOnly {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			stream, prefix := fmt.Sprintf("BATCHED_%d", i), fmt.Sprintf("batched%d.events", i)
			writeBatched(t, h, stream, prefix, tc.tamper(t, raws, other), filler)
			evs, got := readCopy(t, h, stream, prefix)
			checkReport(t, Verify("s-chain", evs, h.keys), tc)
			checkReport(t, VerifyRaw("s-chain", got, h.keys), tc)
		})
	}
	// The untouched session, written batched the same way, reads back
	// whole and verifies.
	writeBatched(t, h, "BATCHED_OK", "batchedok.events", raws, filler)
	evs, got := readCopy(t, h, "BATCHED_OK", "batchedok.events")
	if r := Verify("s-chain", evs, h.keys); !r.OK() || len(got) != len(raws) {
		t.Fatalf("untouched, batched: %d of %d events, %+v", len(got), len(raws), r)
	}
}

// writeBatched stores raws, events of s-chain, in a new stream as a
// gateway with group commit would (start and end alone on the session's
// subjects, the rest in batches shared with filler events of another
// session), or as an attacker must to make a reader of s-chain take them:
// an event of another session, or one after the end, alone on s-chain's
// subjects (readers look for a session's batched events between its start
// and its end only: a gateway writes none elsewhere).
func writeBatched(t *testing.T, h *harness, stream, prefix string, raws, filler []json.RawMessage) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"}}); err != nil {
		t.Fatal(err)
	}
	var pending [][]byte
	fi, ended := 0, false
	flush := func() {
		if len(pending) == 0 {
			return
		}
		body := append(append([]byte{'['}, bytes.Join(pending, []byte{','})...), ']')
		if _, err := h.js.Publish(ctx, prefix+"."+h.rec.instance+"."+KindBatch, body); err != nil {
			t.Fatal(err)
		}
		pending = nil
	}
	for _, raw := range raws {
		ev := rawEvent(t, raw)
		if !batchable(ev.Type) || ev.Session != "s-chain" || ended {
			ended = ended || ev.Type == TypeSessionEnd
			flush()
			if _, err := h.js.Publish(ctx, prefix+".s-chain."+Kind(ev.Type), raw); err != nil {
				t.Fatal(err)
			}
			continue
		}
		pending = append(pending, raw)
		if fi < len(filler) {
			pending = append(pending, filler[fi])
			fi++
		}
		if len(pending) >= 4 {
			flush()
		}
	}
	flush()
}

// TestBatchUnreadable: a batch message whose body is not a batch of events
// is reported by the reader of a session in it, not skipped.
func TestBatchUnreadable(t *testing.T) {
	h := newHarness(t, harnessOptions{GroupCommit: true})
	ctx := context.Background()
	l := h.rec.Open("gc-bad", testMeta("agent-1", "orders-db"))
	l.Append(Event{Type: TypeSessionStart})
	mustCommit(t, l)
	if _, err := h.js.Publish(ctx, DefaultSubjectPrefix+"."+h.rec.instance+"."+KindBatch, []byte(`{"not":"a batch"}`)); err != nil {
		t.Fatal(err)
	}
	_, err := h.rd.Events(ctx, "gc-bad")
	if err == nil || !strings.Contains(err.Error(), "not a batch of events") {
		t.Fatalf("reading a session with an unreadable batch: %v", err)
	}
}

func TestPeekType(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"v":5,"type":"statement","session":"s","seq":2}`, "statement"},
		{`{"v":5,"type":"session.end","session":"s"}`, "session.end"},
		{`{"type":"statement"}`, ""},
		{`{"v":5,"type":"st\"x"}`, ""},
		{`{"v":5,"type":"unterminated`, ""},
	} {
		if got := peekType([]byte(tc.in)); got != tc.want {
			t.Errorf("peekType(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSplitBatch(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string // nil: an error
	}{
		{`[]`, []string{}},
		{`[{"a":1}]`, []string{`{"a":1}`}},
		{`[{"a":"},{"},{"b":[{"c":"\"]"}]}]`, []string{`{"a":"},{"}`, `{"b":[{"c":"\"]"}]}`}},
		{` [ {"a":"\\"} , {} ] `, []string{`{"a":"\\"}`, `{}`}},
		{`{"a":1}`, nil},
		{`[{"a":1}`, nil},
		{`[{"a":1},]`, nil},
		{`[{"a":1}]x`, nil},
		{`[1]`, nil},
		{`[{"a":"1}]`, nil},
		{`[{"a":[1}]`, nil},
		{``, nil},
	} {
		got, err := splitBatch([]byte(tc.in))
		if tc.want == nil {
			if err == nil {
				t.Errorf("splitBatch(%s) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("splitBatch(%s) = %q, %v; want %q", tc.in, got, err, tc.want)
			continue
		}
		for i := range got {
			if string(got[i]) != tc.want[i] {
				t.Errorf("splitBatch(%s)[%d] = %s, want %s", tc.in, i, got[i], tc.want[i])
			}
		}
	}
}

// FuzzSplitBatch: whatever splitBatch accepts is an array of the objects
// it returns, by encoding/json's reading.
func FuzzSplitBatch(f *testing.F) {
	for _, s := range []string{`[]`, `[{"a":1},{"b":"}]"}]`, `[{"a":[{}]}]`, `[{"a":"\"}"}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		raws, err := splitBatch(data)
		if err != nil {
			return
		}
		var all []json.RawMessage
		if json.Unmarshal(data, &all) != nil {
			// splitBatch checks structure, not every value; only a valid
			// array must split the same.
			return
		}
		if len(all) != len(raws) {
			t.Fatalf("%q: %d elements, json finds %d", data, len(raws), len(all))
		}
		for i := range all {
			if !bytes.Equal(bytes.TrimSpace(all[i]), raws[i]) {
				t.Fatalf("%q: element %d is %q, json finds %q", data, i, raws[i], all[i])
			}
		}
	})
}
