package recorder

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestReadTakesStandbyNotYetSourced: after a failover, the events the
// standby took reach the events stream only when its source catches up,
// which nats-server may put off for minutes. Until then a read must take
// them from the standby: a session whose events and chunks are split
// between the two streams (the standby's source never copies here) reads
// back whole and verifies, where reading the events stream alone shows
// "seq missing: an event was removed".
func TestReadTakesStandbyNotYetSourced(t *testing.T) {
	h := newHarness(t, harnessOptions{PublishTimeout: largePublishTimeout})
	ctx := context.Background()
	recorded := recordLarge(t, h, "s-split", 3<<20, 0)
	if len(recorded.Chunks) < 2 || len(recorded.Events) < 4 {
		t.Fatalf("recorded %d events, %d chunks", len(recorded.Events), len(recorded.Chunks))
	}

	o := newSplitPair(t, h)
	// Copy the session over, every other message to the standby.
	n, toStandby := copyToPair(t, h, o, "s-split", func(i int) bool { return i%2 == 1 })
	if toStandby == 0 {
		t.Fatalf("copied %d messages, none to the standby", n)
	}

	rd := NewReader(h.js, o.Stream, o.Subjects)
	st, err := rd.Stored(ctx, "s-split")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Events) != len(recorded.Events) || len(st.Chunks) != len(recorded.Chunks) {
		t.Fatalf("read %d events and %d chunks of %d and %d", len(st.Events), len(st.Chunks), len(recorded.Events), len(recorded.Chunks))
	}
	if r := VerifyStored("s-split", st.Events, st.Chunks, h.keys); !r.OK() {
		t.Fatalf("verify: %+v", r)
	}
	evs, err := rd.Events(ctx, "s-split")
	if err != nil {
		t.Fatal(err)
	}
	if evs[1].Statement == nil || len(evs[1].Statement.Text) < 3<<20 {
		t.Fatalf("the large statement did not read back whole")
	}
	ss, err := rd.Sessions(ctx, ListOptions{})
	if err != nil || len(ss) != 1 || ss[0].Status != StatusEnded {
		t.Fatalf("sessions: %+v, %v", ss, err)
	}
}

// newSplitPair makes two streams shaped like a failover's pair, but the
// events stream without its source: what a stalled source looks like to
// a reader.
func newSplitPair(t *testing.T, h *harness) Options {
	t.Helper()
	o := Options{Stream: "SPLIT", Subjects: "split"}
	main := standbyConfig(o)
	main.Name, main.Subjects = o.Stream, []string{o.Subjects + ".>"}
	for _, cfg := range []jetstream.StreamConfig{main, standbyConfig(o)} {
		if _, err := h.js.CreateStream(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

// copyToPair copies the messages of session id from the harness's stream
// into o's pair, under each stream's subjects as the recorder would have
// published them: to the standby those toStandby says (by their place in
// the session), the others to the events stream. It returns how many went
// to each.
func copyToPair(t *testing.T, h *harness, o Options, id string, toStandby func(i int) bool) (events, standby int) {
	t.Helper()
	return copySomeToPair(t, h, o, id, func(i int) (bool, bool) { return true, toStandby(i) })
}

// copySomeToPair is copyToPair of the messages pick says to copy, to the
// standby or not as it says.
func copySomeToPair(t *testing.T, h *harness, o Options, id string, pick func(i int) (take, toStandby bool)) (events, standby int) {
	t.Helper()
	ctx := context.Background()
	cons, err := h.js.OrderedConsumer(ctx, testStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{DefaultSubjectPrefix + "." + id + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return events, standby
		}
		take, toStandby := pick(i)
		if !take {
			continue
		}
		prefix := o.Subjects
		if toStandby {
			prefix, standby = StandbySubjects(o.Subjects), standby+1
		} else {
			events++
		}
		out := &nats.Msg{Subject: prefix + strings.TrimPrefix(msg.Subject(), DefaultSubjectPrefix), Data: msg.Data(), Header: msg.Headers()}
		if _, err := h.js.PublishMsg(ctx, out); err != nil {
			t.Fatal(err)
		}
	}
}
