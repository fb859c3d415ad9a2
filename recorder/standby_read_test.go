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

	// Two streams shaped like a failover's pair, but the events stream
	// without the source: what a stalled source looks like to a reader.
	o := Options{Stream: "SPLIT", Subjects: "split"}
	main := standbyConfig(o)
	main.Name, main.Subjects = o.Stream, []string{o.Subjects + ".>"}
	for _, cfg := range []jetstream.StreamConfig{main, standbyConfig(o)} {
		if _, err := h.js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	// Copy the session over, every other message to the standby.
	cons, err := h.js.OrderedConsumer(ctx, testStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{DefaultSubjectPrefix + ".s-split.>"}})
	if err != nil {
		t.Fatal(err)
	}
	n, toStandby := 0, 0
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			break
		}
		prefix := o.Subjects
		if n%2 == 1 {
			prefix, toStandby = StandbySubjects(o.Subjects), toStandby+1
		}
		out := &nats.Msg{Subject: prefix + strings.TrimPrefix(msg.Subject(), DefaultSubjectPrefix), Data: msg.Data(), Header: msg.Headers()}
		if _, err := h.js.PublishMsg(ctx, out); err != nil {
			t.Fatal(err)
		}
		n++
	}
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
