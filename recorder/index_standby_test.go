package recorder

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestIndexFollowsStandby: with a standby, the index lists what a
// failover sent there before the events stream has sourced it (a stalled
// source can take minutes), and the sourced copies that arrive later
// change no count. The two streams are shaped like a failover's pair, the
// events stream without its source, as in TestReadTakesStandbyNotYetSourced.
func TestIndexFollowsStandby(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	ctx := context.Background()
	o := newSplitPair(t, h)
	// record stores a session's events in the harness's stream, for
	// copyToPair to move into the pair.
	record := func(id string, evs ...Event) {
		t.Helper()
		l := h.rec.Open(id, testMeta("agent-1", "orders-db"))
		for _, ev := range evs {
			l.Append(ev)
		}
		if err := l.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// source copies what the standby holds into the events stream, as
	// nats-server's source does once it runs again.
	source := func() {
		t.Helper()
		cons, err := h.js.OrderedConsumer(ctx, StandbyStream(o.Stream), jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
			if err != nil {
				return
			}
			out := &nats.Msg{Subject: o.Subjects + strings.TrimPrefix(msg.Subject(), StandbySubjects(o.Subjects)), Data: msg.Data(), Header: msg.Headers()}
			if _, err := h.js.PublishMsg(ctx, out); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Before the index starts: a session wholly on the standby, ended,
	// and an open one whose start is on the events stream and whose two
	// statements went to the standby.
	record("on-standby", Event{Type: TypeSessionStart}, stmtEvent(1, "SELECT 1"), denyEvent(2, "DELETE FROM orders"),
		Event{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: 2, Denied: 1}})
	if m, s := copyToPair(t, h, o, "on-standby", func(int) bool { return true }); m != 0 || s < 4 {
		t.Fatalf("copied %d to the events stream, %d to the standby", m, s)
	}
	record("split", Event{Type: TypeSessionStart}, stmtEvent(1, "SELECT 1"), denyEvent(2, "DELETE FROM orders"))
	if m, s := copyToPair(t, h, o, "split", func(i int) bool { return i > 0 }); m != 1 || s < 2 {
		t.Fatalf("copied %d to the events stream, %d to the standby", m, s)
	}

	x := NewIndex(h.js, IndexOptions{Stream: o.Stream, SubjectPrefix: o.Subjects, Standby: StandbyStream(o.Stream)})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = x.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// list is what List answers, one session a line: at once, since
	// List's Sync waits for both streams.
	list := func() string {
		t.Helper()
		p, err := x.List(ctx, Query{})
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, s := range p.Sessions {
			lines = append(lines, fmt.Sprintf("%s %s %d/%d", s.Session, s.Status, s.Statements, s.Denied))
		}
		return strings.Join(lines, "\n")
	}
	want := "split open 2/1\non-standby ended 2/1"
	if got := list(); got != want {
		t.Fatalf("listed before the source ran:\n%s\nwant:\n%s", got, want)
	}

	// Live: a session that starts and ends on the standby is listed by
	// the next list.
	record("live", Event{Type: TypeSessionStart}, stmtEvent(1, "SELECT 1"),
		Event{Type: TypeSessionEnd, End: &End{Reason: "client closed", Statements: 1}})
	copyToPair(t, h, o, "live", func(int) bool { return true })
	want = "live ended 1/0\n" + want
	if got := list(); got != want {
		t.Fatalf("listed after a session on the standby:\n%s\nwant:\n%s", got, want)
	}

	// Back from a failover: the index reads a statement the events
	// stream took before the two the standby took just earlier (the
	// standby's follow takes every followPace), and counts all three.
	l := h.rec.Open("back", testMeta("agent-1", "orders-db"))
	for _, ev := range []Event{{Type: TypeSessionStart}, stmtEvent(1, "SELECT 1"), denyEvent(2, "DELETE FROM orders"), stmtEvent(3, "SELECT 3")} {
		l.Append(ev)
		if err := l.Commit(ctx); err != nil { // a message each
			t.Fatal(err)
		}
	}
	if m, s := copySomeToPair(t, h, o, "back", func(i int) (bool, bool) { return i == 0 || i == 3, false }); m != 2 || s != 0 {
		t.Fatalf("copied %d to the events stream, %d to the standby", m, s)
	}
	want = "back open 1/0\n" + want
	if got := list(); got != want {
		t.Fatalf("listed with the events stream's statement:\n%s\nwant:\n%s", got, want)
	}
	if m, s := copySomeToPair(t, h, o, "back", func(i int) (bool, bool) { return i == 1 || i == 2, true }); m != 0 || s != 2 {
		t.Fatalf("copied %d to the events stream, %d to the standby", m, s)
	}
	want = strings.Replace(want, "back open 1/0", "back open 3/1", 1)
	if got := list(); got != want {
		t.Fatalf("listed after the standby's earlier statements:\n%s\nwant:\n%s", got, want)
	}

	// The source runs: every standby message arrives a second time, now
	// on the events stream, and the counts stay.
	source()
	if got := list(); got != want {
		t.Fatalf("listed after the source ran:\n%s\nwant:\n%s", got, want)
	}
}
