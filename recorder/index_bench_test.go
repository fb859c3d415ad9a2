package recorder

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// indexSessions is the size of the benchmarks' index.
const indexSessions = 100_000

// sessionMessages is one recorded session as the index reads it: its
// start, three statements (one in ten sessions has a denial), its end;
// subject and body each.
type benchMsg struct {
	subject string
	body    []byte
}

var benchT0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func benchSession(i int) []benchMsg {
	id := fmt.Sprintf("ses_%016d", i)
	m := testMeta(fmt.Sprintf("agent-%d", i%50), fmt.Sprintf("db-%d", i%20))
	m.Grant = fmt.Sprintf("g-%d", i%1000)
	m.Task = fmt.Sprintf("task number %d of the quarter", i%1000)
	m.Client = fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, 40000+i%20000)
	m.Gateway = "gw-1"
	at := benchT0.Add(time.Duration(i) * time.Second)
	evs := []Event{{Type: TypeSessionStart, Start: &Start{Instance: "gi_aaaaaaaaaaaaaaaa"}}}
	for j := uint64(1); j <= 3; j++ {
		ev := stmtEvent(j, "SELECT id, total FROM orders WHERE customer_id = $1")
		if i%10 == 0 && j == 2 {
			ev = denyEvent(j, "DELETE FROM orders")
		}
		evs = append(evs, ev)
	}
	denied := 0
	if i%10 == 0 {
		denied = 1
	}
	evs = append(evs, Event{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: 3, Denied: denied}})
	out := make([]benchMsg, len(evs))
	for k := range evs {
		ev := &evs[k]
		ev.V, ev.Session, ev.Seq, ev.Meta, ev.Time = Version, id, uint64(k+1), m, at.Add(time.Duration(k)*time.Millisecond)
		ev.Hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		b, _ := json.Marshal(ev)
		out[k] = benchMsg{DefaultSubjectPrefix + "." + id + "." + Kind(ev.Type), b}
	}
	return out
}

// buildBenchIndex applies n sessions to a new index, as follow does. The
// bodies are encoded in batches with the timer stopped (when b is set).
func buildBenchIndex(b *testing.B, n int) *Index {
	x := NewIndex(nil, IndexOptions{Stream: testStream})
	seq := uint64(0)
	const batch = 10_000
	msgs := make([]benchMsg, 0, batch*5)
	for i := 0; i < n; i += batch {
		if b != nil {
			b.StopTimer()
		}
		msgs = msgs[:0]
		for j := i; j < min(i+batch, n); j++ {
			msgs = append(msgs, benchSession(j)...)
		}
		if b != nil {
			b.StartTimer()
		}
		for _, m := range msgs {
			seq++
			x.Apply(m.subject, m.body, seq)
		}
	}
	x.readyOnce.Do(func() { close(x.ready) })
	return x
}

// BenchmarkIndexBuild applies 100,000 sessions (five messages each:
// start, three statements, end) to an index, as it does following the
// stream, and reports what the index holds per session.
func BenchmarkIndexBuild(b *testing.B) {
	var x *Index
	var before, after runtime.MemStats
	var held uint64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		x = nil
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.StartTimer()
		x = buildBenchIndex(b, indexSessions)
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		held = after.HeapAlloc - before.HeapAlloc
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/indexSessions, "ns/session")
	b.ReportMetric(float64(held)/indexSessions, "bytes/session")
	runtime.KeepAlive(x)
}

// BenchmarkIndexQuery pages through an index of 100,000 sessions.
func BenchmarkIndexQuery(b *testing.B) {
	x := buildBenchIndex(nil, indexSessions)
	deep, err := x.Query(Query{Limit: 50, Since: benchT0.Add(indexSessions / 2 * time.Second)})
	if err != nil {
		b.Fatal(err)
	}
	var lastDeep Summary
	if n := len(deep.Sessions); n > 0 {
		lastDeep = deep.Sessions[n-1]
	}
	for _, tc := range []struct {
		name string
		q    Query
	}{
		{"first-page", Query{Limit: 50}},
		{"cursor-mid-list", Query{Limit: 50, Cursor: encodeCursor(lastDeep.Start.UnixNano(), lastDeep.Session)}},
		{"agent", Query{Limit: 50, Agent: "agent-7"}},
		{"grant+denied", Query{Limit: 50, Grant: "g-10", Denied: true}},
		{"task-substring", Query{Limit: 50, Task: "NUMBER 999 OF"}},
		{"no-match-full-scan", Query{Limit: 50, Agent: "nobody"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				p, err := x.Query(tc.q)
				if err != nil {
					b.Fatal(err)
				}
				if tc.name != "no-match-full-scan" && len(p.Sessions) == 0 {
					b.Fatal("no sessions")
				}
			}
		})
	}
}

// BenchmarkIndexLoad reads the history of a real stream holding 100,000
// sessions (start and end each; 10,000 of them still open with a denied
// statement) into an index: what a gateway spends at start.
func BenchmarkIndexLoad(b *testing.B) {
	h := newHarness(b, harnessOptions{})
	ctx := context.Background()
	var futs []jetstream.PubAckFuture
	flush := func() {
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
		futs = futs[:0]
	}
	for i := range indexSessions {
		for _, m := range benchSession(i) {
			if m.subject[len(m.subject)-4:] == KindStmt && i%10 != 0 {
				continue // statements of ended sessions are not read
			}
			if m.subject[len(m.subject)-3:] == KindEnd && i%10 == 0 {
				continue // one in ten stays open
			}
			f, err := h.js.PublishAsync(m.subject, m.body)
			if err != nil {
				b.Fatal(err)
			}
			futs = append(futs, f)
		}
		if len(futs) >= 4000 {
			flush()
		}
	}
	flush()
	b.ResetTimer()
	for b.Loop() {
		x := NewIndex(h.js, IndexOptions{Stream: testStream})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = x.Run(rctx) }()
		if err := x.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		<-done
		if n := x.Len(); n != indexSessions {
			b.Fatalf("%d sessions", n)
		}
		if p, _ := x.Query(Query{Denied: true, State: StatusOpen}); len(p.Sessions) != indexSessions/10 {
			b.Fatalf("%d open sessions with denials, want %d", len(p.Sessions), indexSessions/10)
		}
	}
}

// BenchmarkIndexApplyStatement is what every gateway's index spends on
// each statement any gateway records: the live consumer follows the .stmt
// subjects to count open sessions' denials.
func BenchmarkIndexApplyStatement(b *testing.B) {
	x := NewIndex(nil, IndexOptions{Stream: "S"})
	st := stmtEvent(1, "SELECT id, total FROM orders WHERE customer_id = $1 AND created_at > now() - interval '1 day'")
	st.Session, st.Meta = "ses_0000000000000001", testMeta("agent-1", "orders-db")
	st.Statement.Params = []Param{{Value: "42", Format: "text", Size: 2}}
	body, err := Canonical(&st)
	if err != nil {
		b.Fatal(err)
	}
	subject := DefaultSubjectPrefix + "." + st.Session + "." + KindStmt
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		seq++
		st.Seq = seq
		x.Apply(subject, body, seq)
	}
}
