package recorder

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/authz"
)

// recordSession records a complete session through the harness: a start,
// a one-statement message and its result, a two-statement message and its
// results, a denied statement, an end. It returns the stored bodies.
func recordSession(t *testing.T, h *harness, id string) []json.RawMessage {
	t.Helper()
	ctx := context.Background()
	l := h.rec.Open(id, testMeta("agent-1", "orders-db"))
	commit := func() { t.Helper(); mustCommit(t, l) }
	l.Append(Event{Type: TypeSessionStart})
	commit()
	l.Append(stmtEvent(1, "SELECT * FROM orders"))
	commit()
	l.Append(resultEvent(1))
	two := func(id uint64, i int, text string) Event {
		ev := stmtEvent(id, text)
		ev.Statement.Index, ev.Statement.Count = i, 2
		return ev
	}
	l.Append(two(2, 0, "SELECT 1"))
	l.Append(two(3, 1, "SELECT 2"))
	commit()
	l.Append(resultEvent(2))
	l.Append(resultEvent(3))
	l.Append(Event{Type: TypeStatement, Statement: &Statement{ID: 4, Count: 1, Text: "DELETE FROM orders", Decision: "deny",
		Rule: "access-level", Reason: "DELETE needs write access", Class: authz.Classification{Kind: "DELETE", Required: authz.AccessWrite}}})
	commit()
	l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: 4, Denied: 1}})
	commit()
	raws, err := h.rd.RawEvents(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(raws) != 9 {
		t.Fatalf("%d events stored, want 9", len(raws))
	}
	return raws
}

func TestChainAndSignatures(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	raws := recordSession(t, h, "s-chain")
	evs, err := h.rd.Events(context.Background(), "s-chain")
	if err != nil {
		t.Fatal(err)
	}
	checkGapless(t, "s-chain", evs, 9)
	// Recorded within DefaultSignInterval: only the start and the end are
	// signed; the chain carries the rest to them.
	signed := map[uint64]bool{1: true, 9: true}
	fp := h.rec.Signer().Fingerprint()
	prev := ""
	for _, ev := range evs {
		if ev.Prev != prev {
			t.Errorf("seq %d: prev %q, want %q", ev.Seq, ev.Prev, prev)
		}
		if h, err := EventHash(&ev); err != nil || h != ev.Hash {
			t.Errorf("seq %d: hash %q, recomputed %q (%v)", ev.Seq, ev.Hash, h, err)
		}
		if got := ev.Sig != "" && ev.Key == fp; got != signed[ev.Seq] {
			t.Errorf("seq %d (%s): signed %v, want %v", ev.Seq, ev.Type, got, signed[ev.Seq])
		}
		prev = ev.Hash
	}
	if r := Verify("s-chain", evs, h.keys); !r.OK() || r.Key != fp || r.Events != 9 || r.LastSeq != 9 {
		t.Fatalf("verify: %+v", r)
	}
	if r := VerifyRaw("s-chain", raws, h.keys); !r.OK() {
		t.Fatalf("verify raw: %+v", r)
	}
	// Stored bodies are canonical: decoding and encoding gives them back.
	for i, raw := range raws {
		if again, _ := json.Marshal(&evs[i]); !bytes.Equal(raw, again) {
			t.Fatalf("seq %d not canonical:\n%s\n%s", i+1, raw, again)
		}
	}

	// The export round trip keeps the bytes and verifies offline.
	var buf bytes.Buffer
	x := NewExport("s-chain", testStream, raws, []PublicKey{h.rec.Signer().Public()}, time.Now())
	if err := x.Write(&buf); err != nil {
		t.Fatal(err)
	}
	y, err := ReadExport(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := y.Verify(nil); err != nil || !r.OK() {
		t.Fatalf("verify export: %+v %v", r, err)
	}
	// Under another key nothing verifies.
	other, _ := NewKeyring(testSigner(t).Public())
	if r := Verify("s-chain", evs, other); r.Status != VerifyFailed || r.FirstBad != 1 || !strings.Contains(r.Problem, "not trusted") {
		t.Fatalf("verify with another key: %+v", r)
	}
}

// mustCommit commits l's events or fails the test.
func mustCommit(t *testing.T, l *Log) {
	t.Helper()
	if err := l.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// rawEvent decodes one stored body for a tamper function to change.
func rawEvent(t *testing.T, raw json.RawMessage) Event {
	t.Helper()
	var ev Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

func encode(t *testing.T, ev Event) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(&ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rechain recomputes Prev and Hash from index from on, as anyone without
// the key can; signatures are left as they are, or made with forger.
func rechain(t *testing.T, raws []json.RawMessage, from int, forger *Signer) []json.RawMessage {
	t.Helper()
	out := slices.Clone(raws)
	prev := ""
	if from > 0 {
		prev = rawEvent(t, out[from-1]).Hash
	}
	for i := from; i < len(out); i++ {
		ev := rawEvent(t, out[i])
		ev.Prev = prev
		if forger != nil && ev.Sig != "" {
			ev.Key = forger.Fingerprint()
		}
		sum, err := hashEvent(&ev)
		if err != nil {
			t.Fatal(err)
		}
		ev.Hash = fmt.Sprintf("%x", sum[:])
		if forger != nil && ev.Sig != "" {
			ev.Sig = forger.sign(&sum)
		}
		out[i] = encode(t, ev)
		prev = ev.Hash
	}
	return out
}

// tamperCase is one way of changing a recorded session and what the
// verifier must say about it.
type tamperCase struct {
	name string
	// tamper changes the stored bodies of session s-chain; other is a
	// second session's bodies, for replays.
	tamper func(t *testing.T, raws, other []json.RawMessage) []json.RawMessage
	// status, seq and problem are what the verifier must report.
	status  string
	seq     uint64
	problem string
	// fileOnly cases change the order of the bodies, which a stream copy
	// does not keep (readers order by seq).
	fileOnly bool
}

func tamperCases(forger *Signer) []tamperCase {
	return []tamperCase{
		{name: "altered field", seq: 2, problem: "hash does not match",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				out := slices.Clone(raws)
				out[1] = bytes.Replace(out[1], []byte("SELECT * FROM orders"), []byte("SELECT * FROM invoice"), 1)
				return out
			}},
		{name: "altered result, chain recomputed without the key", seq: 9, problem: "signature does not verify",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				out := slices.Clone(raws)
				ev := rawEvent(t, out[2])
				ev.Result.Executed = false
				out[2] = encode(t, ev)
				return rechain(t, out, 2, nil)
			}},
		{name: "added member", seq: 3, problem: "stored bytes differ",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				out := slices.Clone(raws)
				out[2] = bytes.Replace(out[2], []byte(`{"v":3,`), []byte(`{"v":3,"note":"approved by the CEO",`), 1)
				return out
			}},
		{name: "removed event", seq: 3, problem: "seq 3 missing",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				return slices.Delete(slices.Clone(raws), 2, 3)
			}},
		{name: "removed event, later ones renumbered", seq: 3, problem: "hash does not match",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				out := slices.Delete(slices.Clone(raws), 2, 3)
				for i := 2; i < len(out); i++ {
					ev := rawEvent(t, out[i])
					ev.Seq--
					out[i] = encode(t, ev)
				}
				return out
			}},
		{name: "removed event, renumbered and rechained", seq: 8, problem: "signature does not verify",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				out := slices.Delete(slices.Clone(raws), 2, 3)
				for i := 2; i < len(out); i++ {
					ev := rawEvent(t, out[i])
					ev.Seq--
					out[i] = encode(t, ev)
				}
				return rechain(t, out, 2, nil)
			}},
		{name: "two events swapped in the file", seq: 3, problem: "reordered", fileOnly: true,
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				out := slices.Clone(raws)
				out[2], out[3] = out[3], out[2]
				return out
			}},
		{name: "two events swapped, seqs exchanged", seq: 3, problem: "hash does not match",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				out := slices.Clone(raws)
				a, b := rawEvent(t, out[2]), rawEvent(t, out[3])
				a.Seq, b.Seq = b.Seq, a.Seq
				out[2], out[3] = encode(t, b), encode(t, a)
				return out
			}},
		{name: "two events swapped, seqs exchanged and rechained", seq: 9, problem: "signature does not verify",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				out := slices.Clone(raws)
				a, b := rawEvent(t, out[2]), rawEvent(t, out[3])
				a.Seq, b.Seq = b.Seq, a.Seq
				out[2], out[3] = encode(t, b), encode(t, a)
				return rechain(t, out, 2, nil)
			}},
		{name: "truncated tail", status: VerifyUnterminated, problem: "no session.end and no session.interrupted after seq 7",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				return slices.Clone(raws[:7])
			}},
		{name: "forged end signed with another key", seq: 9, problem: "not trusted",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				out := slices.Clone(raws)
				ev := rawEvent(t, out[8])
				ev.End.Denied = 0
				out[8] = encode(t, ev)
				return rechain(t, out, 8, forger)
			}},
		{name: "forged signature under the gateway's key id", seq: 9, problem: "signature does not verify",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				out := slices.Clone(raws)
				ev := rawEvent(t, out[8])
				ev.End.Denied = 0
				sum, _ := hashEvent(&ev)
				ev.Hash = fmt.Sprintf("%x", sum[:])
				ev.Sig = forger.sign(&sum)
				out[8] = encode(t, ev)
				return out
			}},
		{name: "forged end without a signature", seq: 9, problem: "carries no signature",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				out := slices.Clone(raws)
				ev := rawEvent(t, out[8])
				ev.Key, ev.Sig = "", ""
				out[8] = encode(t, ev)
				return rechain(t, out, 8, nil)
			}},
		{name: "forged statement appended after the end", seq: 10, problem: "after the session's end",
			tamper: func(t *testing.T, raws, _ []json.RawMessage) []json.RawMessage {
				ev := rawEvent(t, raws[1])
				ev.Seq = 10
				return rechain(t, append(slices.Clone(raws), encode(t, ev)), 9, forger)
			}},
		{name: "event replayed from another session", seq: 3, problem: "replayed from another session",
			tamper: func(t *testing.T, raws, other []json.RawMessage) []json.RawMessage {
				out := slices.Clone(raws)
				out[2] = other[2]
				return out
			}},
		{name: "event replayed from another session, renamed", seq: 3, problem: "hash does not match",
			tamper: func(t *testing.T, raws, other []json.RawMessage) []json.RawMessage {
				out := slices.Clone(raws)
				ev := rawEvent(t, other[2])
				ev.Session = "s-chain"
				out[2] = encode(t, ev)
				return out
			}},
		{name: "a second event with an existing seq", seq: 3, problem: "stored twice",
			tamper: func(t *testing.T, raws, other []json.RawMessage) []json.RawMessage {
				ev := rawEvent(t, raws[2])
				ev.Result.Tag = "SELECT 0"
				return slices.Insert(slices.Clone(raws), 3, encode(t, ev))
			}},
	}
}

// TestVerifyTamperedFile tampers with an exported session file and checks
// that verify --file's logic reports each change at the right seq.
func TestVerifyTamperedFile(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	raws := recordSession(t, h, "s-chain")
	other := recordSession(t, h, "s-other")
	forger := testSigner(t)
	keys := []PublicKey{h.rec.Signer().Public()}
	for _, tc := range tamperCases(forger) {
		t.Run(tc.name, func(t *testing.T) {
			var file bytes.Buffer
			if err := NewExport("s-chain", testStream, tc.tamper(t, raws, other), keys, time.Now()).Write(&file); err != nil {
				t.Fatal(err)
			}
			x, err := ReadExport(&file)
			if err != nil {
				t.Fatal(err)
			}
			r, err := x.Verify(nil)
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, r, tc)
		})
	}
}

// TestVerifyTamperedStreamCopy copies a recorded session into another
// stream, changing it on the way, and verifies what a reader of that copy
// gets: the same checks must hold on the stream path, where the reader
// orders and de-duplicates.
func TestVerifyTamperedStreamCopy(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	raws := recordSession(t, h, "s-chain")
	other := recordSession(t, h, "s-other")
	forger := testSigner(t)
	ctx := context.Background()
	for i, tc := range tamperCases(forger) {
		if tc.fileOnly {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			stream, prefix := fmt.Sprintf("COPY_%d", i), fmt.Sprintf("copy%d.events", i)
			if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"}}); err != nil {
				t.Fatal(err)
			}
			for _, raw := range tc.tamper(t, raws, other) {
				ev := rawEvent(t, raw)
				// Each event goes to its own session's subject, as the
				// gateway would have published it.
				if _, err := h.js.Publish(ctx, prefix+"."+"s-chain."+Kind(ev.Type), raw); err != nil {
					t.Fatal(err)
				}
			}
			evs, got := readCopy(t, h, stream, prefix)
			checkReport(t, Verify("s-chain", evs, h.keys), tc)
			checkReport(t, VerifyRaw("s-chain", got, h.keys), tc)
		})
	}
	// The untouched copy verifies.
	if r := VerifyRaw("s-chain", raws, h.keys); !r.OK() {
		t.Fatalf("untouched: %+v", r)
	}
}

// readCopy reads s-chain back from a copied stream, decoded and as
// stored.
func readCopy(t *testing.T, h *harness, stream, prefix string) ([]Event, []json.RawMessage) {
	t.Helper()
	ctx := context.Background()
	rd := NewReader(h.js, stream, prefix)
	evs, err := rd.Events(ctx, "s-chain")
	if err != nil {
		t.Fatal(err)
	}
	got, err := rd.RawEvents(ctx, "s-chain")
	if err != nil {
		t.Fatal(err)
	}
	return evs, got
}

func checkReport(t *testing.T, r Report, tc tamperCase) {
	t.Helper()
	status := tc.status
	if status == "" {
		status = VerifyFailed
	}
	// A member the format does not define is invisible once decoded; only
	// a raw check sees it, and Verify over decoded events passes.
	if tc.name == "added member" && r.OK() {
		return
	}
	if r.Status != status || r.FirstBad != tc.seq || !strings.Contains(r.Problem, tc.problem) {
		t.Fatalf("report %+v\nwant status %s, first bad seq %d, problem containing %q", r, status, tc.seq, tc.problem)
	}
}

func TestVerifyUnterminated(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	l := h.rec.Open("s-crash", testMeta("a", "r"))
	l.Append(Event{Type: TypeSessionStart})
	l.Append(stmtEvent(1, "INSERT INTO t VALUES (1)"))
	l.Append(resultEvent(1))
	if err := l.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	evs, err := h.rd.Events(ctx, "s-crash")
	if err != nil {
		t.Fatal(err)
	}
	r := Verify("", evs, h.keys)
	if r.Status != VerifyUnterminated || r.Unauthenticated != 2 || r.FirstBad != 0 || r.Session != "s-crash" {
		t.Fatalf("%+v", r)
	}
	if s := Summarize(evs); s.Status != StatusOpen {
		t.Fatalf("summary status %q, want %q", s.Status, StatusOpen)
	}

	// A refused login is a complete session of one event.
	a := h.rec.Open("s-auth", testMeta("a", "r"))
	a.Append(Event{Type: TypeAuthFailed, Auth: &AuthFailure{User: "a", Reason: "bad token"}})
	if err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	evs, err = h.rd.Events(ctx, "s-auth")
	if err != nil {
		t.Fatal(err)
	}
	if r := Verify("s-auth", evs, h.keys); !r.OK() {
		t.Fatalf("auth.failed session: %+v", r)
	}
}

func TestVerifyFormats(t *testing.T) {
	kr, _ := NewKeyring(testSigner(t).Public())
	if r := Verify("x", nil, kr); r.Status != VerifyFailed || r.Problem != "no events" {
		t.Fatalf("no events: %+v", r)
	}
	v1 := []Event{{V: 1, Type: TypeSessionStart, Session: "x", Seq: 1}}
	if r := Verify("x", v1, kr); r.Status != VerifyFailed || !strings.Contains(r.Problem, "format v1") {
		t.Fatalf("v1: %+v", r)
	}
	v4 := []Event{{V: Version + 1, Type: TypeSessionStart, Session: "x", Seq: 1}}
	if r := Verify("x", v4, kr); r.Status != VerifyFailed || !strings.Contains(r.Problem, "newer") {
		t.Fatalf("v%d: %+v", Version+1, r)
	}
	if r := VerifyRaw("x", []json.RawMessage{json.RawMessage(`{"v":2,`)}, kr); r.Status != VerifyFailed || !strings.Contains(r.Problem, "not a readable event") {
		t.Fatalf("junk: %+v", r)
	}
}

// TestCanonicalRoundTrip records events with every kind of member and
// awkward strings (HTML characters, line separators, invalid UTF-8, a
// zero that a pointer keeps) and checks that what is stored decodes and
// encodes back to the same bytes, which the verifier's re-encoding needs.
func TestCanonicalRoundTrip(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	rows := int64(0)
	l := h.rec.Open("s-round", testMeta("a<b>&c", "r\u2028"))
	l.Append(Event{Type: TypeSessionStart, Time: time.Date(2025, 6, 3, 14, 2, 12, 482000100, time.FixedZone("x", 3600))})
	l.Append(Event{Type: TypeStatement, Statement: &Statement{ID: 1, Count: 1, Text: "SELECT '\xff' <> 1 -- \u00e9\t\\ufffd", Decision: "allow", Rule: "r",
		Class:  authz.Classification{Kind: "SELECT", Required: authz.AccessNone, TablesRead: []string{}, Functions: []string{"now"}},
		Params: []Param{{Value: "", Null: true}, {Value: "aGk=", Format: "base64", Size: 2, Truncated: true}}}})
	l.Append(Event{Type: TypeStatementResult, Time: time.Unix(0, 0), Result: &Result{ID: 1, Rows: &rows, Error: "x\x80", SQLState: "42501"}})
	l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "r"}})
	if err := l.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	raws, err := h.rd.RawEvents(ctx, "s-round")
	if err != nil {
		t.Fatal(err)
	}
	if r := VerifyRaw("s-round", raws, h.keys); !r.OK() {
		t.Fatalf("%+v\n%s", r, raws)
	}
	evs, err := h.rd.Events(ctx, "s-round")
	if err != nil {
		t.Fatal(err)
	}
	if got := evs[1].Statement.Text; got != "SELECT '\ufffd' <> 1 -- \u00e9\t\\ufffd" {
		t.Errorf("text stored as %q", got)
	}
	if got := evs[0].Time; !got.Equal(time.Date(2025, 6, 3, 13, 2, 12, 482000100, time.UTC)) || got.Location() != time.UTC {
		t.Errorf("time stored as %v", got)
	}
}

// TestFirstEventExpectation: events already on a session's subjects make
// the stream refuse the session's first event, so a second writer cannot
// start a session id someone else used, however long ago.
func TestFirstEventExpectation(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	if _, err := h.js.Publish(ctx, "airlock.events.s-taken.stmt", []byte(`{"v":2}`)); err != nil {
		t.Fatal(err)
	}
	l := h.rec.Open("s-taken", testMeta("a", "r"))
	l.Append(Event{Type: TypeSessionStart})
	err := l.Commit(ctx)
	if err == nil || !strings.Contains(err.Error(), "already holds events of session s-taken") {
		t.Fatalf("commit: %v", err)
	}
	if n := h.streamMsgs(t); n != 1 {
		t.Fatalf("stream holds %d messages, want 1 (commit: %v)", n, err)
	}
}

// TestSessionsDoNotWaitForEachOther: a session whose event is never
// acknowledged does not hold up another session's Commit.
func TestSessionsDoNotWaitForEachOther(t *testing.T) {
	h := newHarness(t, harnessOptions{PublishTimeout: 2 * time.Second})
	ctx := context.Background()
	stuck := h.rec.Open("s-stuck", testMeta("a", "r"))
	stuck.Append(Event{Type: TypeSessionStart})
	stuck.mu.Lock()
	// An attempt whose outcome never arrives, sent just now.
	stuck.outbox[0].att = &attempt{ok: make(chan *jetstream.PubAck), errc: make(chan error), sent: time.Now(), done: make(chan struct{})}
	stuck.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- stuck.Commit(ctx) }()

	free := h.rec.Open("s-free", testMeta("b", "r"))
	start := time.Now()
	for i := range 50 {
		free.Append(stmtEvent(uint64(i+1), "SELECT 1"))
		if err := free.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("50 commits of a free session took %s next to a stuck one", d)
	}
	select {
	case err := <-done:
		t.Fatalf("the stuck session's commit returned early: %v", err)
	default:
	}
}

// TestSignInterval checks the format v3 signing policy on a live session:
// a quiet session's unsigned events get a checkpoint within the interval,
// a busy session signs an event inline once its oldest unsigned event has
// waited the interval, nothing is appended after the end, and the result
// verifies.
func TestSignInterval(t *testing.T) {
	const interval = 40 * time.Millisecond
	h := newHarness(t, harnessOptions{SignInterval: interval})
	ctx := context.Background()
	l := h.rec.Open("s-interval", testMeta("a", "r"))
	commit := func() { t.Helper(); mustCommit(t, l) }
	l.Append(Event{Type: TypeSessionStart})
	l.Append(stmtEvent(1, "SELECT 1"))
	commit()
	// Quiet: the timer appends a signed checkpoint after the statement.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		n := l.seq
		l.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint within 5s")
		}
	}
	commit()
	// Busy: a statement every 5 ms for 10 intervals.
	for id := uint64(2); id < 80; id++ {
		l.Append(stmtEvent(id, "SELECT 2"))
		commit()
		time.Sleep(5 * time.Millisecond)
	}
	l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "done"}})
	commit()
	time.Sleep(3 * interval)

	evs, err := h.rd.Events(ctx, "s-interval")
	if err != nil {
		t.Fatal(err)
	}
	if r := Verify("s-interval", evs, h.keys); !r.OK() {
		t.Fatalf("verify: %+v", r)
	}
	if evs[2].Type != TypeCheckpoint || evs[2].Sig == "" {
		t.Fatalf("seq 3 is %s (signed %v), want a signed checkpoint", evs[2].Type, evs[2].Sig != "")
	}
	if last := evs[len(evs)-1]; last.Type != TypeSessionEnd {
		t.Fatalf("last event %d is %s: something was appended after the end", last.Seq, last.Type)
	}
	// Every unsigned event is covered by a signature made within the
	// interval (plus scheduling slack on a loaded machine).
	inline := 0
	for i, ev := range evs {
		if ev.Sig != "" {
			if ev.Type == TypeStatement {
				inline++
			}
			continue
		}
		j := i + 1
		for evs[j].Sig == "" {
			j++
		}
		if wait := evs[j].Time.Sub(ev.Time); wait > interval+50*time.Millisecond {
			t.Errorf("seq %d waited %s for the signature of seq %d, interval %s", ev.Seq, wait, evs[j].Seq, interval)
		}
	}
	if inline == 0 {
		t.Error("no statement of the busy session was signed inline")
	}
	// Far fewer signatures than events: the point of the policy.
	if signed := countSigned(evs); signed*3 > len(evs) {
		t.Errorf("%d of %d events signed", signed, len(evs))
	}
	t.Logf("%d events, %d signed (%d statements inline)", len(evs), countSigned(evs), inline)
}

func countSigned(evs []Event) int {
	n := 0
	for _, ev := range evs {
		if ev.Sig != "" {
			n++
		}
	}
	return n
}

// TestVerifyV2Rule: events of format v2 are still held to v2's rule, which
// signed the last statement of every message.
func TestVerifyV2Rule(t *testing.T) {
	s := testSigner(t)
	kr, _ := NewKeyring(s.Public())
	var evs []Event
	prev := ""
	add := func(ev Event, sign bool) {
		ev.V, ev.Session, ev.Seq, ev.Prev, ev.Meta = 2, "v2", uint64(len(evs)+1), prev, testMeta("a", "r")
		if sign {
			ev.Key = s.Fingerprint()
		}
		sum, _ := hashEvent(&ev)
		ev.Hash = fmt.Sprintf("%x", sum[:])
		if sign {
			ev.Sig = s.sign(&sum)
		}
		prev = ev.Hash
		evs = append(evs, ev)
	}
	add(Event{Type: TypeSessionStart}, true)
	add(stmtEvent(1, "SELECT 1"), true)
	add(resultEvent(1), false)
	add(Event{Type: TypeSessionEnd, End: &End{Reason: "done"}}, true)
	if r := Verify("v2", evs, kr); !r.OK() {
		t.Fatalf("v2 session: %+v", r)
	}
	evs, prev = evs[:0], ""
	add(Event{Type: TypeSessionStart}, true)
	add(stmtEvent(1, "SELECT 1"), false)
	add(Event{Type: TypeSessionEnd, End: &End{Reason: "done"}}, true)
	if r := Verify("v2", evs, kr); r.Status != VerifyFailed || r.FirstBad != 2 || !strings.Contains(r.Problem, "carries no signature") {
		t.Fatalf("v2 statement without a signature: %+v", r)
	}
}

// TestResultsRideOnNextEvent: an outcome is not an event of its own; it
// is carried by the session's next event (a statement, the end), or by a
// checkpoint when the session is quiet, and one after the end is dropped
// rather than appended after it.
func TestResultsRideOnNextEvent(t *testing.T) {
	// Long enough that a loaded machine's pause between an outcome and
	// the next statement is not taken for quiet (at 30 ms, a run beside
	// the e2e tests saw a checkpoint carry outcome 1).
	const interval = 300 * time.Millisecond
	h := newHarness(t, harnessOptions{SignInterval: interval})
	ctx := context.Background()
	l := h.rec.Open("s-results", testMeta("a", "r"))
	commit := func() { t.Helper(); mustCommit(t, l) }
	rows := int64(3)
	l.Append(Event{Type: TypeSessionStart})
	l.Append(stmtEvent(1, "SELECT 1"))
	commit()
	l.Result(Result{ID: 1, Executed: true, Tag: "SELECT 3", Rows: &rows})
	if n := h.streamMsgs(t); n != 2 {
		t.Fatalf("an outcome published %d messages, want none (2 in the stream)", n-2)
	}
	l.Append(stmtEvent(2, "SELECT 2"))
	commit()
	// Quiet: the outcome of statement 2 goes out on a checkpoint.
	l.Result(Result{ID: 2, Executed: true, Tag: "SELECT 3", Rows: &rows})
	for deadline := time.Now().Add(5 * time.Second); h.streamMsgs(t) < 4; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint carried the quiet session's outcome within 5s")
		}
	}
	l.Append(stmtEvent(3, "SELECT 3"))
	commit()
	l.Result(Result{ID: 3, Executed: false, Error: "recording unavailable"})
	l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "done", Statements: 3}})
	commit()
	l.Result(Result{ID: 4, Executed: true})
	time.Sleep(3 * interval)

	evs, err := h.rd.Events(ctx, "s-results")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		ids := ""
		for _, r := range ev.Outcomes() {
			ids += fmt.Sprintf("+%d", r.ID)
		}
		got = append(got, ev.Type+ids)
	}
	want := "session.start statement statement+1 checkpoint+2 statement session.end+3"
	if strings.Join(got, " ") != want {
		t.Fatalf("events: %s\nwant:   %s", strings.Join(got, " "), want)
	}
	if r := Verify("s-results", evs, h.keys); !r.OK() {
		t.Fatalf("verify: %+v", r)
	}
	if r := evs[3].Results[0]; !r.Executed || r.Tag != "SELECT 3" || *r.Rows != 3 {
		t.Fatalf("outcome 2: %+v", r)
	}
}

// TestSealedIsTheEncoding: the stored message Append builds from the
// canonical bytes is byte for byte what encoding the event gives, for
// first and later events, signed or not, and strings that look like
// envelope members.
func TestSealedIsTheEncoding(t *testing.T) {
	s := testSigner(t)
	trick := `x","prev":"y,"key":"z","time":"`
	for _, tc := range []Event{
		{Type: TypeSessionStart, Seq: 1},
		{Type: TypeStatement, Seq: 2, Prev: strings.Repeat("a", 64), Statement: &Statement{ID: 1, Text: trick}},
		{Type: trick, Seq: 3, Prev: strings.Repeat("b", 64)},
		{Type: TypeCheckpoint, Seq: 4, Prev: strings.Repeat("c", 64), Results: []Result{{ID: 1, Error: trick}}},
	} {
		for _, sign := range []bool{false, true} {
			ev := tc
			ev.V, ev.Session, ev.Time, ev.Meta = Version, "s", time.Now().UTC(), testMeta(trick, "r")
			if sign {
				ev.Key = s.Fingerprint()
			}
			canon, err := canonicalFast(&ev)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(canon.b)
			ev.Hash = hex.EncodeToString(sum[:])
			if sign {
				ev.Sig = s.sign(&sum)
			}
			got := canon.sealed(ev.Hash, ev.Sig)
			want, _ := json.Marshal(&ev)
			if !bytes.Equal(got, want) {
				t.Errorf("%s signed=%v:\ngot  %s\nwant %s", ev.Type, sign, got, want)
			}
		}
	}
}

// TestReportLineCounts: a report of one event says "1 event", not
// "1 events".
func TestReportLineCounts(t *testing.T) {
	for _, c := range []struct {
		r    Report
		want string
	}{
		{Report{Session: "s1", Status: VerifyOK, Events: 1, LastSeq: 1, Key: "k"}, "s1: ok: 1 event, seq 1-1"},
		{Report{Session: "s2", Status: VerifyOK, Events: 2, LastSeq: 2, Key: "k"}, "s2: ok: 2 events, seq 1-2"},
		{Report{Session: "s3", Status: VerifyUnterminated, Events: 1, Problem: "p"}, "s3: UNTERMINATED: 1 event: p"},
	} {
		if got := c.r.Line(); !strings.HasPrefix(got, c.want) {
			t.Errorf("Line() = %q, want it to start with %q", got, c.want)
		}
	}
}
