package recorder

import (
	"context"
	"testing"
	"time"

	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/testenv"
)

// TestIndexListWhileLeaderLost: the server leading the events stream,
// which the index is connected to, is killed, and a second server with
// it, so for a while the cluster has no quorum and the index's consumer
// cannot be made again. Throughout, List answers within its bound (a
// second to catch up, then what the index has); once the second server is
// back and the stream has a leader, the index follows it again and lists
// a session recorded after the kill.
func TestIndexListWhileLeaderLost(t *testing.T) {
	c := testenv.StartNATSCluster(t, testenv.NATSClusterOptions{})
	h := newHarness(t, harnessOptions{URL: c.URL, Replicas: 3})
	ctx := context.Background()
	record := func(id string) {
		t.Helper()
		l := h.rec.Open(id, testMeta("agent-1", "orders-db"))
		l.Append(Event{Type: TypeSessionStart})
		l.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "done"}})
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := l.Commit(cctx); err != nil {
			t.Fatal(err)
		}
	}
	record("before")

	leader := streamLeader(t, h)
	victim := nodeIndex(t, c, leader)
	other := (victim + 1) % len(c.Nodes)
	// The index's connection is to the leader alone (and the servers it
	// discovers): losing it makes the index's consumer be made again at
	// once, on another server.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := natsconn.Connect(cctx, natsconn.Options{URL: c.Nodes[victim].URL, Name: t.Name()})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	x := startIndex(t, &harness{js: conn.JS})
	if p, err := x.List(ctx, Query{}); err != nil || pageIDs(p) != "before" {
		t.Fatalf("before the kill: %q, %v", pageIDs(p), err)
	}

	// Lists, one after another, from the kill until the index shows the
	// session recorded after it.
	type listed struct {
		took time.Duration
		ids  string
		err  error
	}
	lists := make(chan listed)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			t0 := time.Now()
			p, err := x.List(ctx, Query{})
			select {
			case lists <- listed{time.Since(t0), pageIDs(p), err}:
			case <-stop:
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	bound := listSyncWait + time.Second
	c.Kill(t, victim)
	c.Kill(t, other)
	killed := time.Now()
	var (
		restarted, recorded bool
		n                   int
	)
	for {
		select {
		case l := <-lists:
			n++
			if l.took > bound {
				t.Fatalf("%s after the kill, a list took %s (bound %s)", time.Since(killed).Round(time.Millisecond), l.took.Round(time.Millisecond), bound)
			}
			if l.err == nil && l.ids == "after,before" {
				t.Logf("the index listed the session recorded after the kill %s after it, in %d lists", time.Since(killed).Round(time.Millisecond), n)
				return
			}
		case <-time.After(bound + time.Second):
			t.Fatalf("%s after the kill, a list has not answered in %s (bound %s)", time.Since(killed).Round(time.Millisecond), bound+time.Second, bound)
		}
		switch {
		case !restarted && time.Since(killed) > 6*time.Second:
			// Lists went on without a quorum; now the cluster gets one back.
			c.Start(t, other)
			restarted = true
		case restarted && !recorded && hasLeader(h):
			record("after")
			recorded = true
		case time.Since(killed) > time.Minute:
			t.Fatalf("a minute after the kill the index does not list the session recorded after it")
		}
	}
}

// hasLeader says whether the events stream has a leader.
func hasLeader(h *harness) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, testStream)
	return err == nil && st.CachedInfo().Cluster != nil && st.CachedInfo().Cluster.Leader != ""
}

// streamLeader is the server leading the events stream.
func streamLeader(t *testing.T, h *harness) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	ci := st.CachedInfo().Cluster
	if ci == nil || ci.Leader == "" {
		t.Fatalf("stream %s has no leader", testStream)
	}
	return ci.Leader
}
