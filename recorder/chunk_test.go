package recorder

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// TestLargeStatementDoesNotWedge: a statement whose event is larger than
// the server's max_payload (1 MiB by default) is recorded, the session's
// later statements are too, and the session verifies. Before format v4
// the large event failed to publish ("nats: maximum payload exceeded"),
// stayed in the outbox for good, so every later Commit failed too, and
// verify called the session tampered ("seq 2 missing").
func TestLargeStatementDoesNotWedge(t *testing.T) {
	h := newHarness(t, harnessOptions{PublishTimeout: largePublishTimeout})
	ctx := context.Background()
	l := h.rec.Open("s-big", testMeta("agent-1", "orders-db"))
	l.Append(Event{Type: TypeSessionStart})
	if err := l.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	big := "INSERT INTO t VALUES ('" + strings.Repeat("x", 4<<20) + "')"
	l.Append(stmtEvent(1, big))
	if err := l.Commit(ctx); err != nil {
		t.Errorf("commit of a 4 MB statement: %v", err)
	}
	l.Append(stmtEvent(2, "SELECT 1"))
	if err := l.Commit(ctx); err != nil {
		t.Errorf("commit of the next statement: %v", err)
	}
	l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: 2}})
	if err := l.Commit(ctx); err != nil {
		t.Errorf("commit of the end: %v", err)
	}
	st, err := h.rd.Stored(ctx, "s-big")
	if err != nil {
		t.Fatal(err)
	}
	if r := VerifyStored("s-big", st.Events, st.Chunks, h.keys); !r.OK() {
		t.Errorf("verify: %+v", r)
	}
	evs, err := h.rd.Events(ctx, "s-big")
	if err != nil {
		t.Fatal(err)
	}
	evs = withoutCheckpoints(evs)
	if len(evs) != 4 || evs[1].Statement == nil || evs[1].Statement.Text != big {
		t.Fatalf("read back: %d events besides checkpoints, want 4; or the large statement's text is not whole", len(evs))
	}
	if len(st.Events[1]) > 64<<10 {
		t.Errorf("the large statement's event is %d bytes; its text should be in chunks", len(st.Events[1]))
	}
}

// recordLarge records a session whose statement 1 has a text of textLen
// bytes and params parameters, then a small statement and the end, and
// returns the session as stored.
func recordLarge(t *testing.T, h *harness, session string, textLen, params int) *Stored {
	t.Helper()
	ctx := context.Background()
	l := h.rec.Open(session, testMeta("agent-1", "orders-db"))
	l.Append(Event{Type: TypeSessionStart})
	ev := stmtEvent(1, "INSERT INTO t VALUES ('"+strings.Repeat("y", textLen)+"')")
	for i := range params {
		ev.Statement.Params = append(ev.Statement.Params, Param{Value: strconv.Itoa(i), Format: "text", Size: len(strconv.Itoa(i))})
	}
	l.Append(ev)
	if err := l.Commit(ctx); err != nil {
		t.Fatalf("commit of the large statement: %v", err)
	}
	l.Result(Result{ID: 1, Executed: true, Tag: "INSERT 0 1"})
	l.Append(stmtEvent(2, "SELECT 1"))
	l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: 2}})
	if err := l.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	st, err := h.rd.Stored(ctx, session)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestManyParamsRecorded: a prepared statement's execution with 65,535
// parameters (the Postgres protocol's limit) encodes to some 3 MB; its
// parameters go to chunks and come back whole.
func TestManyParamsRecorded(t *testing.T) {
	h := newHarness(t, harnessOptions{PublishTimeout: largePublishTimeout})
	st := recordLarge(t, h, "s-params", 10, 65535)
	if r := VerifyStored("s-params", st.Events, st.Chunks, h.keys); !r.OK() {
		t.Fatalf("verify: %+v", r)
	}
	evs, err := h.rd.Events(context.Background(), "s-params")
	if err != nil {
		t.Fatal(err)
	}
	evs = withoutCheckpoints(evs)
	s := evs[1].Statement
	if s.ParamsRef == nil || len(s.Params) != 65535 || s.Params[65534].Value != "65534" {
		t.Fatalf("parameters read back: ref %+v, %d params", s.ParamsRef, len(s.Params))
	}
	if s.TextRef != nil {
		t.Errorf("a short text went to chunks: %+v", s.TextRef)
	}
}

// TestBodyInChunks: an event too large even with its text and parameters
// in chunks (here: a statement that reads 100,000 tables, then the
// outcomes of 60,000 statements on one event) keeps its body in chunks.
func TestBodyInChunks(t *testing.T) {
	h := newHarness(t, harnessOptions{PublishTimeout: largePublishTimeout})
	ctx := context.Background()
	l := h.rec.Open("s-body", testMeta("agent-1", "orders-db"))
	l.Append(Event{Type: TypeSessionStart})
	ev := stmtEvent(1, "SELECT 1")
	for i := range 100000 {
		ev.Statement.Class.TablesRead = append(ev.Statement.Class.TablesRead, "public.t"+strconv.Itoa(i))
	}
	l.Append(ev)
	for i := range 60000 {
		l.Result(Result{ID: uint64(i + 1), Executed: true, Tag: "SELECT 1"})
	}
	l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: 1}})
	if err := l.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := h.rd.Stored(ctx, "s-body")
	if err != nil {
		t.Fatal(err)
	}
	if r := VerifyStored("s-body", st.Events, st.Chunks, h.keys); !r.OK() {
		t.Fatalf("verify: %+v", r)
	}
	all, err := h.rd.Events(ctx, "s-body")
	if err != nil {
		t.Fatal(err)
	}
	evs := withoutCheckpoints(all)
	if evs[1].BodyRef == nil || evs[1].Statement == nil || len(evs[1].Statement.Class.TablesRead) != 100001 {
		t.Fatalf("statement body not read back whole: ref %v st %v", evs[1].BodyRef, evs[1].Statement != nil)
	}
	// The outcomes go on the next event sealed: the end, or a checkpoint
	// before it when sealing took longer than the signing interval.
	results := 0
	for _, ev := range all {
		results += len(ev.Results)
	}
	if evs[2].End == nil || results != 60000 {
		t.Fatalf("outcomes not read back whole: %d of 60000", results)
	}
	for i, raw := range st.Events {
		if len(raw) > 1<<20 {
			t.Errorf("stored event %d is %d bytes, over the server's max_payload: its body should be in chunks", i, len(raw))
		}
	}
}

// TestChunkTampering: a chunk removed, altered, swapped or added is
// reported at the seq of the event that references it, as tampering;
// the same checks hold in an export file.
func TestChunkTampering(t *testing.T) {
	h := newHarness(t, harnessOptions{PublishTimeout: largePublishTimeout})
	st := recordLarge(t, h, "s-tamper", 3<<20, 0)
	if len(st.Chunks) < 3 {
		t.Fatalf("%d chunks, want several", len(st.Chunks))
	}
	cases := []struct {
		name    string
		tamper  func([]Chunk) []Chunk
		problem string
	}{
		{"chunk removed", func(cs []Chunk) []Chunk { return append(cs[:1:1], cs[2:]...) }, "part 2 of"},
		{"all chunks removed", func(cs []Chunk) []Chunk { return nil }, "no chunk of it is stored"},
		{"chunk altered", func(cs []Chunk) []Chunk {
			cs[0].Data = bytes.Replace(cs[0].Data, []byte("yyy"), []byte("zzz"), 1)
			return cs
		}, "a chunk was altered"},
		{"chunk shortened", func(cs []Chunk) []Chunk { cs[1].Data = cs[1].Data[1:]; return cs }, "a chunk was altered"},
		{"chunks swapped", func(cs []Chunk) []Chunk { cs[0].Part, cs[1].Part = cs[1].Part, cs[0].Part; return cs }, "a chunk was altered"},
		{"chunk added", func(cs []Chunk) []Chunk {
			c := cs[0]
			c.Data = []byte("DROP TABLE t")
			return append(cs, c)
		}, "stored twice with different content"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cs := make([]Chunk, len(st.Chunks))
			for i, c := range st.Chunks {
				c.Data = bytes.Clone(c.Data)
				cs[i] = c
			}
			cs = tc.tamper(cs)
			r := VerifyStored("s-tamper", st.Events, cs, h.keys)
			if r.Status != VerifyFailed || r.FirstBad != 2 || !strings.Contains(r.Problem, tc.problem) {
				t.Fatalf("report %+v, want failed at seq 2 with %q", r, tc.problem)
			}
			x := NewExport("s-tamper", testStream, st.Events, []PublicKey{h.rec.Signer().Public()}, time.Now())
			x.Chunks = cs
			var file bytes.Buffer
			if err := x.Write(&file); err != nil {
				t.Fatal(err)
			}
			y, err := ReadExport(&file)
			if err != nil {
				t.Fatal(err)
			}
			if r, err := y.Verify(nil); err != nil || r.Status != VerifyFailed || r.FirstBad != 2 {
				t.Fatalf("export file: %+v, %v", r, err)
			}
		})
	}
	// Untouched, the export file verifies, and events alone do not.
	x := NewExport("s-tamper", testStream, st.Events, []PublicKey{h.rec.Signer().Public()}, time.Now())
	x.Chunks = st.Chunks
	var file bytes.Buffer
	if err := x.Write(&file); err != nil {
		t.Fatal(err)
	}
	y, err := ReadExport(&file)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := y.Verify(nil); err != nil || !r.OK() {
		t.Fatalf("export file: %+v, %v", r, err)
	}
	if r := VerifyRaw("s-tamper", st.Events, h.keys); r.Status != VerifyFailed || r.FirstBad != 2 {
		t.Fatalf("events without their chunks: %+v", r)
	}
}

// TestChunksFollowServerLimit: against a server whose max_payload is 64
// KiB, the smallest the recorder takes, a 20 MB statement is recorded in
// chunks that fit, over more than one window of chunks in flight, while a
// quick checkpoint timer appends events meanwhile; order and chain hold.
func TestChunksFollowServerLimit(t *testing.T) {
	port := freePort(t)
	s, err := server.NewServer(&server.Options{
		ServerName: "small", Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true, MaxPayload: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	h := newHarness(t, harnessOptions{URL: serverURL(port), SignInterval: 2 * time.Millisecond})
	st := recordLarge(t, h, "s-small", 20<<20, 3000)
	if r := VerifyStored("s-small", st.Events, st.Chunks, h.keys); !r.OK() {
		t.Fatalf("verify: %+v", r)
	}
	for _, raw := range st.Events {
		if len(raw) > 64<<10 {
			t.Fatalf("an event of %d bytes on a server that takes 64 KiB", len(raw))
		}
	}
	if len(st.Chunks) < 320 {
		t.Fatalf("%d chunks for 20 MB under a 64 KiB limit", len(st.Chunks))
	}
}

// TestRecorderRefusesTinyLimit: a stream whose max_msg_size is below what
// an event needs stops the recorder at start, naming the limit.
func TestRecorderRefusesTinyLimit(t *testing.T) {
	h := newHarness(t, harnessOptions{PublishTimeout: largePublishTimeout})
	ctx := context.Background()
	if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: "TINY", Subjects: []string{"tiny.>"}, Storage: jetstream.FileStorage,
		MaxMsgSize: 4096, DenyDelete: true, DenyPurge: true, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	_, err := New(ctx, h.js, Options{Stream: "TINY", Subjects: "tiny", Signer: testSigner(t)})
	if err == nil || !strings.Contains(err.Error(), "max_msg_size, 4096") {
		t.Fatalf("New on a stream with max_msg_size 4096: %v", err)
	}
}

// TestLimitShrinksExplained: when the stream's max_msg_size is lowered
// under a running gateway, a chunk sized for the old limit is refused for
// good. The session's log stops there with an error that says why, and
// what it recorded verifies as unterminated, not as tampered.
func TestLimitShrinksExplained(t *testing.T) {
	h := newHarness(t, harnessOptions{PublishTimeout: largePublishTimeout})
	ctx := context.Background()
	l := h.rec.Open("s-shrink", testMeta("agent-1", "orders-db"))
	l.Append(Event{Type: TypeSessionStart})
	l.Append(stmtEvent(1, "SELECT 1"))
	if err := l.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	stream, err := h.js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.MaxMsgSize = 100 << 10
	if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	l.Append(stmtEvent(2, strings.Repeat("x", 2<<20)))
	err = l.Commit(ctx)
	if err == nil || !strings.Contains(err.Error(), "max_msg_size") {
		t.Fatalf("commit after the limit shrank: %v", err)
	}
	l.Append(stmtEvent(3, "SELECT 3"))
	if err := l.Commit(ctx); err == nil {
		t.Fatal("commit after a permanent failure succeeded")
	}
	st, err := h.rd.Stored(ctx, "s-shrink")
	if err != nil {
		t.Fatal(err)
	}
	if r := VerifyStored("s-shrink", st.Events, st.Chunks, h.keys); r.Status != VerifyUnterminated {
		t.Fatalf("verify: %+v, want unterminated", r)
	}
}

// TestBlobEncodingMatchesJSON: the values the writer puts in chunks are
// encoding/json's encoding of what they stand for (an event body, a
// parameter list), so a reader decodes them with the standard library.
func TestBlobEncodingMatchesJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		var ev Event
		fill(reflect.ValueOf(&ev).Elem(), r, awkward)
		want, err := json.Marshal(&eventBody{Statement: ev.Statement, Result: ev.Result, Results: ev.Results, Auth: ev.Auth, End: ev.End, Data: ev.Data})
		if err != nil {
			t.Fatal(err)
		}
		if ev.Statement != nil {
			e := encoder{}
			e.params(ev.Statement.Params)
			wantParams, _ := json.Marshal(ev.Statement.Params)
			if len(ev.Statement.Params) > 0 && !bytes.Equal(e.b, wantParams) {
				t.Fatalf("params:\n got %s\nwant %s", e.b, wantParams)
			}
		}
		c := ev
		b := bodyBlob(&c)
		if !bytes.Equal(b.data, want) {
			t.Fatalf("body:\n got %s\nwant %s", b.data, want)
		}
	}
}

// TestRepeatedValueStoredOnce: a large text referenced by several events of
// a session (a prepared statement executed again) is stored once; every
// reference finds it, and the session verifies.
func TestRepeatedValueStoredOnce(t *testing.T) {
	h := newHarness(t, harnessOptions{PublishTimeout: largePublishTimeout})
	ctx := context.Background()
	l := h.rec.Open("s-again", testMeta("agent-1", "orders-db"))
	l.Append(Event{Type: TypeSessionStart})
	text := "INSERT INTO t VALUES ('" + strings.Repeat("z", 3<<20) + "')"
	for i := range 3 {
		l.Append(stmtEvent(uint64(i+1), text))
		if err := l.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: 3}})
	if err := l.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := h.rd.Stored(ctx, "s-again")
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for _, c := range st.Chunks {
		size += len(c.Data)
	}
	if size != len(text) {
		t.Fatalf("chunks hold %d bytes for a %d-byte text referenced 3 times", size, len(text))
	}
	if r := VerifyStored("s-again", st.Events, st.Chunks, h.keys); !r.OK() {
		t.Fatalf("verify: %+v", r)
	}
	evs, err := h.rd.Events(ctx, "s-again")
	if err != nil {
		t.Fatal(err)
	}
	evs = withoutCheckpoints(evs)
	for _, ev := range evs[1:4] {
		if ev.Statement.Text != text {
			t.Fatalf("seq %d: text not read back whole", ev.Seq)
		}
	}
}

// largePublishTimeout is the publish timeout of tests that record
// megabytes: under the race detector on a loaded machine, an embedded
// server has taken more than the default 2 s to store 3 MiB.
const largePublishTimeout = 15 * time.Second

// withoutCheckpoints leaves out the checkpoints a signing interval adds
// to a session when its events are far enough apart (as on a slow
// machine), so tests can index the events they appended.
func withoutCheckpoints(evs []Event) []Event {
	out := evs[:0:0]
	for _, ev := range evs {
		if ev.Type != TypeCheckpoint {
			out = append(out, ev)
		}
	}
	return out
}
