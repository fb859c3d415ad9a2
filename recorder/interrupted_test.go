package recorder

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// gatewayOn is a second recorder on h's stream: another gateway process,
// with its own key and instance.
func gatewayOn(t *testing.T, h *harness, name, instance string, signer *Signer) *Recorder {
	t.Helper()
	rec, err := New(context.Background(), h.js, Options{Stream: testStream, Gateway: name, Instance: instance, Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// crashedSession records a session as a gateway that dies mid-way
// leaves it: a signed start, a signed statement, then statements within
// the sign interval (the unsigned tail), and no end. It returns the
// writer.
func crashedSession(t *testing.T, h *harness, id string) *Recorder {
	t.Helper()
	w := gatewayOn(t, h, "gw-1", "gi_writer", h.rec.Signer())
	w.signEvery = time.Hour // nothing gets signed by time in the test
	l := w.Open(id, testMeta("agent-1", "orders-db"))
	l.Append(Event{Type: TypeSessionStart})
	l.Append(Event{Type: TypeCheckpoint}) // signed: seq 2
	l.Append(stmtEvent(1, "SELECT 1"))
	l.Append(stmtEvent(2, "SELECT 2"))
	mustCommit(t, l)
	return w
}

// TestInterrupt: another gateway notes a crashed session once, with seq
// one past the last and prev its hash, signed with its own key; verify
// calls the session interrupted, intact, with a chained, unsigned tail of
// the two events after the last signature; the list shows it
// interrupted. Noting again, or noting an ended session, does nothing.
func TestInterrupt(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	crashedSession(t, h, "s-crash")
	other := testSigner(t)
	gw2 := gatewayOn(t, h, "gw-2", "gi_noticer", other)

	if s := mustSessions(t, h)["s-crash"]; s.Status != StatusOpen || s.Instance != "gi_writer" {
		t.Fatalf("before: %+v", s)
	}
	if _, err := gw2.Interrupt(ctx, h.rd, "s-crash", "gi_other", "gi_noticer", "wrong instance"); err == nil {
		t.Fatal("noted a session on behalf of a process that did not write it")
	}
	out, err := gw2.Interrupt(ctx, h.rd, "s-crash", "gi_writer", "gi_noticer", "gateway process gi_writer stopped")
	if err != nil || out != NoteWritten {
		t.Fatalf("interrupt: %v %v", out, err)
	}
	if out, err := gw2.Interrupt(ctx, h.rd, "s-crash", "gi_writer", "gi_noticer", "again"); err != nil || out != NoteExists {
		t.Fatalf("interrupt again: %v %v", out, err)
	}

	evs, err := h.rd.Events(ctx, "s-crash")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 5 {
		t.Fatalf("%d events, want 4 and the note", len(evs))
	}
	n := evs[4]
	if n.Type != TypeSessionInterrupted || n.Seq != 5 || n.Prev != evs[3].Hash || n.Key != other.Fingerprint() ||
		n.Gateway != "gw-2" || n.Agent != "agent-1" || n.Interrupted.LastSeq != 4 || n.Interrupted.Instance != "gi_writer" || n.Interrupted.By != "gi_noticer" {
		t.Fatalf("note: %+v %+v", n, n.Interrupted)
	}

	both, _ := NewKeyring(h.rec.Signer().Public(), other.Public())
	r := Verify("s-crash", evs, both)
	if r.Status != VerifyInterrupted || r.Unauthenticated != 2 || r.FirstBad != 0 || r.Interrupted == nil || r.Interrupted.Gateway != "gw-2" ||
		!strings.Contains(r.Problem, "no session.end: interrupted after seq 4") || !strings.Contains(r.Problem, "chained, unsigned tail: the last 2 events (seq 3-4)") {
		t.Fatalf("verify: %+v", r)
	}
	// The note is another gateway's: untrusted, the record fails.
	if r := Verify("s-crash", evs, h.keys); r.Status != VerifyFailed || r.FirstBad != 5 || !strings.Contains(r.Problem, "not trusted") {
		t.Fatalf("verify without the noticer's key: %+v", r)
	}
	if s := Summarize(evs); s.Status != StatusInterrupted || s.End == nil || s.InterruptedBy != "gw-2" {
		t.Fatalf("summary: %+v", s)
	}
	if s := mustSessions(t, h)["s-crash"]; s.Status != StatusInterrupted || s.Interrupted == nil || !strings.HasPrefix(s.EndReason, "interrupted: ") {
		t.Fatalf("listed: %+v", s)
	}

	// An ended session is left alone.
	recordSession(t, h, "s-ended")
	if out, err := gw2.Interrupt(ctx, h.rd, "s-ended", "", "gi_noticer", "x"); err != nil || out != NoteEnded {
		t.Fatalf("ended session: %v %v", out, err)
	}
}

func mustSessions(t *testing.T, h *harness) map[string]Summary {
	t.Helper()
	ss, err := h.rd.Sessions(context.Background(), ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]Summary{}
	for _, s := range ss {
		m[s.Session] = s
	}
	return m
}

// TestInterruptOnce: gateways noting the same session at once store one
// note between them: the stream takes a note only if the session is as
// its writer read it.
func TestInterruptOnce(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	crashedSession(t, h, "s-race")
	var wg sync.WaitGroup
	outs := make([]NoteOutcome, 4)
	errs := make([]error, 4)
	for i := range outs {
		gw := gatewayOn(t, h, "gw-n", NewInstanceID(), h.rec.Signer())
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = gw.Interrupt(ctx, h.rd, "s-race", "gi_writer", "gi_n", "race")
		}()
	}
	wg.Wait()
	written := 0
	for i := range outs {
		if errs[i] != nil {
			t.Fatalf("noticer %d: %v", i, errs[i])
		}
		if outs[i] == NoteWritten {
			written++
		}
	}
	evs, _ := h.rd.Events(ctx, "s-race")
	notes := 0
	for _, ev := range evs {
		if ev.Type == TypeSessionInterrupted {
			notes++
		}
	}
	if written != 1 || notes != 1 {
		t.Fatalf("%d noticers said they wrote, %d notes stored; want one", written, notes)
	}
	if r := Verify("s-race", evs, h.keys); r.Status != VerifyInterrupted {
		t.Fatalf("verify: %+v", r)
	}
}

// TestInterruptedGatewayWritesOn: a gateway declared stopped that was only
// cut off from NATS records on after the note. The note stays as what the
// noticer saw, the chain goes on beside it, and once the session ends it
// verifies, with the note reported as resumed. A note the stream refuses
// because the session grew is not stored.
func TestInterruptedGatewayWritesOn(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	w := gatewayOn(t, h, "gw-1", "gi_writer", h.rec.Signer())
	l := w.Open("s-on", testMeta("agent-1", "orders-db"))
	l.Append(Event{Type: TypeSessionStart})
	l.Append(stmtEvent(1, "SELECT 1"))
	mustCommit(t, l)
	if out, err := h.rec.Interrupt(ctx, h.rd, "s-on", "gi_writer", "gi_noticer", "no heartbeat"); err != nil || out != NoteWritten {
		t.Fatalf("interrupt: %v %v", out, err)
	}
	l.Append(stmtEvent(2, "SELECT 2"))
	l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: 2}})
	mustCommit(t, l)
	evs, err := h.rd.Events(ctx, "s-on")
	if err != nil {
		t.Fatal(err)
	}
	r := Verify("s-on", evs, h.keys)
	if !r.OK() || r.Interrupted == nil || !r.Interrupted.Resumed || r.Interrupted.LastSeq != 2 {
		t.Fatalf("verify: %+v %+v", r, r.Interrupted)
	}
	if s := Summarize(evs); s.Status != StatusEnded || s.Interrupted == nil {
		t.Fatalf("summary: %+v", s)
	}

	// A note published against a stale read is refused by the stream.
	stale := &nats.Msg{Subject: DefaultSubjectPrefix + ".s-on." + KindInterrupted, Data: []byte(`{}`), Header: nats.Header{
		jetstream.ExpectedLastSubjSeqHeader:     []string{"1"},
		jetstream.ExpectedLastSubjSeqSubjHeader: []string{DefaultSubjectPrefix + ".s-on.>"},
	}}
	var apiErr *jetstream.APIError
	if _, err := h.js.PublishMsg(ctx, stale); !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		t.Fatalf("stale note: %v", err)
	}
}

// TestVerifyTailTruncationRemoval tells the three apart on a noted
// session: a crash's chained, unsigned tail verifies as interrupted;
// events removed from the end before the note are truncation (the note
// attests more); a removed note with its tail leaves an unterminated
// session, which is not called interrupted; removed, altered or forged
// events fail as before.
func TestVerifyTailTruncationRemoval(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	crashedSession(t, h, "s-chain")
	other := testSigner(t)
	gw2 := gatewayOn(t, h, "gw-2", "gi_noticer", other)
	if _, err := gw2.Interrupt(ctx, h.rd, "s-chain", "gi_writer", "gi_noticer", "stopped"); err != nil {
		t.Fatal(err)
	}
	raws, err := h.rd.RawEvents(ctx, "s-chain")
	if err != nil || len(raws) != 5 {
		t.Fatalf("%d events: %v", len(raws), err)
	}
	ended := recordSession(t, h, "s-ended")
	forger := testSigner(t)
	keys, _ := NewKeyring(h.rec.Signer().Public(), other.Public())
	note := func(t *testing.T, raws []json.RawMessage) Event { return rawEvent(t, raws[len(raws)-1]) }
	resign := func(t *testing.T, ev Event, s *Signer) json.RawMessage {
		ev.Hash, ev.Sig = "", ""
		if s != nil {
			ev.Key = s.Fingerprint()
		}
		sum, _ := hashEvent(&ev)
		ev.Hash = hexOf(sum[:])
		if s != nil {
			ev.Sig = s.sign(&sum)
		}
		return encode(t, ev)
	}

	cases := []struct {
		name    string
		raws    func(t *testing.T) []json.RawMessage
		status  string
		seq     uint64
		problem string
		tail    int
	}{
		{name: "as recorded: interrupted, with a chained, unsigned tail", status: VerifyInterrupted, tail: 2,
			problem: "chained, unsigned tail: the last 2 events",
			raws:    func(t *testing.T) []json.RawMessage { return raws }},
		{name: "tail event removed before the note: truncated", seq: 4, problem: "truncated",
			raws: func(t *testing.T) []json.RawMessage { return slices.Delete(slices.Clone(raws), 3, 4) }},
		{name: "whole tail removed before the note: truncated", seq: 3, problem: "the record ends at seq 2",
			raws: func(t *testing.T) []json.RawMessage { return slices.Delete(slices.Clone(raws), 2, 4) }},
		{name: "note and tail removed: unterminated, not interrupted", status: VerifyUnterminated,
			problem: "no session.end and no session.interrupted after seq 2",
			raws:    func(t *testing.T) []json.RawMessage { return slices.Clone(raws[:2]) }},
		{name: "ended session cut before its signed end: unterminated, not interrupted", status: VerifyUnterminated, tail: 6,
			problem: "or events were removed from its end",
			raws:    func(t *testing.T) []json.RawMessage { return slices.Clone(ended[:7]) }},
		{name: "event in the middle removed", seq: 3, problem: "seq 3 missing",
			raws: func(t *testing.T) []json.RawMessage { return slices.Delete(slices.Clone(raws), 2, 3) }},
		{name: "tail event altered", seq: 4, problem: "hash does not match",
			raws: func(t *testing.T) []json.RawMessage {
				out := slices.Clone(raws)
				ev := rawEvent(t, out[3])
				ev.Statement.Text = "SELECT 3"
				out[3] = encode(t, ev)
				return out
			}},
		{name: "tail event altered and its hash recomputed without a key", seq: 5, problem: "its prev is not the hash of seq 4",
			raws: func(t *testing.T) []json.RawMessage {
				out := slices.Clone(raws)
				ev := rawEvent(t, out[3])
				ev.Statement.Text = "SELECT 3"
				out[3] = resign(t, ev, nil)
				return out
			}},
		{name: "note forged with another key", seq: 5, problem: "not trusted",
			raws: func(t *testing.T) []json.RawMessage {
				out := slices.Clone(raws)
				out[4] = resign(t, note(t, raws), forger)
				return out
			}},
		{name: "note without a signature", seq: 5, problem: "carries no signature",
			raws: func(t *testing.T) []json.RawMessage {
				out := slices.Clone(raws)
				ev := note(t, raws)
				ev.Key = ""
				out[4] = resign(t, ev, nil)
				return out
			}},
		{name: "note moved to an earlier seq", seq: 3, problem: "its seq 3 is not one past",
			raws: func(t *testing.T) []json.RawMessage {
				out := slices.Clone(raws[:4])
				ev := note(t, raws)
				ev.Seq = 3
				return append(out, resign(t, ev, other))
			}},
		{name: "a second note", seq: 5, problem: "a second session.interrupted",
			raws: func(t *testing.T) []json.RawMessage {
				ev := note(t, raws)
				ev.Interrupted.Reason = "twice"
				return append(slices.Clone(raws), resign(t, ev, other))
			}},
		{name: "note after a session's end", seq: 10, problem: "after the session's end",
			raws: func(t *testing.T) []json.RawMessage {
				ev := note(t, raws)
				ev.Session, ev.Seq, ev.Prev = "s-ended", 10, rawEvent(t, ended[8]).Hash
				ev.Interrupted.LastSeq = 9
				return append(slices.Clone(ended), resign(t, ev, other))
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status := tc.status
			if status == "" {
				status = VerifyFailed
			}
			r := VerifyRaw("", tc.raws(t), keys)
			if r.Status != status || r.FirstBad != tc.seq || !strings.Contains(r.Problem, tc.problem) || r.Unauthenticated != tc.tail {
				t.Fatalf("report %+v\nwant status %s, first bad seq %d, tail %d, problem containing %q", r, status, tc.seq, tc.tail, tc.problem)
			}
		})
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 2*len(b))
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(out)
}
