package recorder

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/testenv"
)

// TestFailoverToStandby records from several sessions to a 3-node cluster
// and SIGKILLs the server leading the events stream. The sessions switch
// to the standby stream and no Commit fails or waits for the election
// (4-9 s); afterwards the events stream holds every session whole, the
// standby's events included, and each verifies.
func TestFailoverToStandby(t *testing.T) {
	c := testenv.StartNATSCluster(t, testenv.NATSClusterOptions{})
	h := newHarness(t, harnessOptions{URL: c.URL, Replicas: 3, Failover: true, PublishTimeout: 2 * time.Second})
	ctx := context.Background()
	if len(h.rec.lanes) != 2 {
		t.Fatalf("failover is off: lanes %+v", h.rec.lanes)
	}
	st, err := h.js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; !sourcesStandby(cfg, Options{Stream: testStream, Subjects: DefaultSubjectPrefix}) {
		t.Fatalf("the events stream does not source its standby: %+v", cfg.Sources)
	}
	leaders := waitApart(t, h.js)

	const sessions = 4
	var (
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		commits atomic.Int64
		mu      sync.Mutex
		slowest time.Duration
		failed  []string
		events  [sessions]int
	)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := h.rec.Open(fmt.Sprintf("s-fo-%d", i), testMeta("a", "r"))
			l.Append(Event{Type: TypeSessionStart})
			for n := uint64(1); ; n++ {
				select {
				case <-stop:
					l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "done"}})
					if err := l.Commit(ctx); err != nil {
						t.Errorf("session %d: end: %v", i, err)
					}
					l.mu.Lock()
					events[i] = int(l.seq)
					l.mu.Unlock()
					return
				default:
				}
				l.Append(stmtEvent(n, "SELECT 1"))
				t0 := time.Now()
				err := l.Commit(ctx)
				d := time.Since(t0)
				mu.Lock()
				slowest = max(slowest, d)
				if err != nil {
					failed = append(failed, err.Error())
				}
				mu.Unlock()
				commits.Add(1)
				l.Result(*resultEvent(n).Result)
			}
		}()
	}
	time.Sleep(time.Second)
	mu.Lock()
	slowest = 0
	mu.Unlock()
	victim := nodeIndex(t, c, leaders.Primary)
	before := commits.Load()
	c.Kill(t, victim)
	time.Sleep(6 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("killed %s (leading %s; %s led the standby): %d commits after, slowest %s, %d failed",
		leaders.Primary, testStream, leaders.Standby, commits.Load()-before, slowest.Round(time.Millisecond), len(failed))
	if len(failed) > 0 {
		t.Errorf("%d commits failed, first: %s", len(failed), failed[0])
	}
	if slowest > 1500*time.Millisecond {
		t.Errorf("a commit waited %s; failing over should take about %s", slowest, h.rec.failoverAfter)
	}
	if n := streamMsgs(t, h.js, StandbyStream(testStream)); n == 0 {
		t.Errorf("the standby took no events")
	}

	// Once the events stream has a leader again it holds everything.
	for i := range sessions {
		s := fmt.Sprintf("s-fo-%d", i)
		deadline := time.Now().Add(30 * time.Second)
		for {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			evs, err := h.rd.Events(rctx, s)
			cancel()
			if err == nil && len(evs) == events[i] {
				checkGapless(t, s, evs, events[i])
				if r := Verify(s, evs, h.keys); !r.OK() {
					t.Errorf("session %s: %+v", s, r)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("session %s: %d of %d events in %s after 30s (%v)", s, len(evs), events[i], testStream, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// TestFailoverNeedsSource: an events stream made without the standby's
// source (by a gateway before failover existed) is used as it is, with
// failover off, rather than writing events where no reader looks.
func TestFailoverNeedsSource(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	rec, err := New(context.Background(), h.js, Options{Stream: testStream, Signer: h.rec.Signer(), Failover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	if len(rec.lanes) != 1 {
		t.Fatalf("failover on without the source: %+v", rec.lanes)
	}
	// The standby was made all the same, as strict as the events stream.
	st, err := h.js.Stream(context.Background(), StandbyStream(testStream))
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; !cfg.DenyDelete || !cfg.DenyPurge || strings.Join(cfg.Subjects, ",") != "airlock.events_standby.>" {
		t.Fatalf("standby config: %+v", cfg)
	}
}

// waitApart waits until the events stream and its standby have leaders
// on different servers (the recorder's monitor moves the standby's).
func waitApart(t *testing.T, js jetstream.JetStream) natsconn.Leaders {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		l, err := natsconn.KeepApart(ctx, js, testStream, StandbyStream(testStream))
		cancel()
		if err == nil && l.Primary != "" && l.Standby != "" && l.Primary != l.Standby {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaders not apart after 30s: %+v %v", l, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func nodeIndex(t *testing.T, c *testenv.NATSCluster, name string) int {
	t.Helper()
	for i, n := range c.Nodes {
		if n.Name == name {
			return i
		}
	}
	t.Fatalf("no node %s", name)
	return -1
}

func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
