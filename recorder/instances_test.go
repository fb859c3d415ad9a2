package recorder

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const testInstances = "airlock_instances"

func openInstances(t *testing.T, h *harness, rec *Recorder, instance, previous string, timeout time.Duration) *Instances {
	t.Helper()
	in, err := OpenInstances(context.Background(), h.js, InstanceOptions{
		Bucket: testInstances, Timeout: timeout, Instance: instance, Gateway: rec.gateway, Previous: previous,
		Recorder: rec, Reader: h.rd, Logger: nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// waitStatus waits until the listed session has status, or fails.
func waitStatus(t *testing.T, h *harness, session, status string, within time.Duration) Summary {
	t.Helper()
	deadline := time.Now().Add(within)
	var s Summary
	for time.Now().Before(deadline) {
		s = mustSessions(t, h)[session]
		if s.Status == status {
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("session %s: %+v after %s, want status %s", session, s, within, status)
	return s
}

// TestInstancesNoteAStoppedGateway: a gateway process registers, serves a
// session, and goes silent without ending it. Another process notices
// once the timeout has passed, claims it, marks the session interrupted
// and removes it from the bucket; sessions that ended are left alone.
func TestInstancesNoteAStoppedGateway(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	const timeout = time.Second
	w := crashedSession(t, h, "s-open")
	wl := w.Open("s-done", testMeta("agent-1", "orders-db"))
	wl.Append(Event{Type: TypeSessionStart})
	wl.Append(Event{Type: TypeSessionEnd, End: &End{Reason: "client closed"}})
	mustCommit(t, wl)
	a := openInstances(t, h, w, "gi_writer", "", timeout)
	a.Start()
	a.Close(context.Background(), false) // it dies: its key stays

	noticer := gatewayOn(t, h, "gw-2", "gi_b", h.rec.Signer())
	b := openInstances(t, h, noticer, "gi_b", "", timeout)
	began := time.Now()
	b.Start()
	defer b.Close(context.Background(), true)
	s := waitStatus(t, h, "s-open", StatusInterrupted, 10*timeout)
	t.Logf("noted after %s", time.Since(began).Round(10*time.Millisecond))
	if time.Since(began) < timeout {
		t.Fatalf("noted after %s, before the timeout of %s", time.Since(began), timeout)
	}
	if s.InterruptedBy != "gw-2" || s.Interrupted.By != "gi_b" || !strings.Contains(s.Interrupted.Reason, "sent no heartbeat") {
		t.Fatalf("note: %+v %+v", s, s.Interrupted)
	}
	if st := mustSessions(t, h)["s-done"]; st.Status != StatusEnded || st.Interrupted != nil {
		t.Fatalf("an ended session was touched: %+v", st)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := b.kv.Get(context.Background(), "gi_writer")
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stopped instance is still in the bucket: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestInstancesNotePrevious: a gateway restarted on the same data
// directory knows its previous instance stopped and notes its sessions at
// once, without waiting out the timeout.
func TestInstancesNotePrevious(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	const timeout = time.Minute
	w := crashedSession(t, h, "s-open")
	a := openInstances(t, h, w, "gi_writer", "", timeout)
	a.Close(context.Background(), false)

	next := gatewayOn(t, h, "gw-1", "gi_next", h.rec.Signer())
	b := openInstances(t, h, next, "gi_next", "gi_writer", timeout)
	b.Start()
	defer b.Close(context.Background(), true)
	s := waitStatus(t, h, "s-open", StatusInterrupted, 10*time.Second)
	if !strings.Contains(s.Interrupted.Reason, "its successor on the same data directory") {
		t.Fatalf("note: %+v", s.Interrupted)
	}
}

// TestInstancesAlive: a live process is never claimed, and one that was
// (it could not reach NATS for a while) registers again at its next
// heartbeat.
func TestInstancesAlive(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	const timeout = time.Second
	w := crashedSession(t, h, "s-live")
	a := openInstances(t, h, w, "gi_writer", "", timeout)
	a.Start()
	defer a.Close(context.Background(), true)
	b := openInstances(t, h, gatewayOn(t, h, "gw-2", "gi_b", h.rec.Signer()), "gi_b", "", timeout)
	b.Start()
	defer b.Close(context.Background(), true)
	time.Sleep(3 * timeout)
	if s := mustSessions(t, h)["s-live"]; s.Status != StatusOpen {
		t.Fatalf("a live gateway's session: %+v", s)
	}

	// Someone claims a's key: a's next heartbeat puts it back.
	ctx := context.Background()
	e, err := a.kv.Get(ctx, "gi_writer")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.kv.Update(ctx, "gi_writer", []byte(`{"instance":"gi_writer","state":"stopped"}`), e.Revision()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		e, err := a.kv.Get(ctx, "gi_writer")
		if err == nil && strings.Contains(string(e.Value()), `"state":"live"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the claimed live instance did not register again: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInstancesOutageIsNotAStop: when NATS itself is gone for longer than
// the timeout, no gateway could heartbeat; once it is back, none takes the
// others for stopped.
func TestInstancesOutageIsNotAStop(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	srv := runServer(t, dir, port)
	h := newHarness(t, harnessOptions{URL: serverURL(port)})
	// a heartbeats every 600ms; b takes a second of silence for a stop
	// and looks every 200ms.
	const timeout = time.Second
	w := crashedSession(t, h, "s-live")
	a := openInstances(t, h, w, "gi_writer", "", 3*timeout)
	a.Start()
	defer a.Close(context.Background(), true)
	b := openInstances(t, h, gatewayOn(t, h, "gw-2", "gi_b", h.rec.Signer()), "gi_b", "", timeout)
	b.Start()
	defer b.Close(context.Background(), true)
	time.Sleep(timeout)

	srv.Shutdown()
	srv.WaitForShutdown()
	time.Sleep(3 * timeout)
	runServer(t, dir, port)
	time.Sleep(4 * timeout)
	if s := mustSessions(t, h)["s-live"]; s.Status != StatusOpen || s.Interrupted != nil {
		t.Fatalf("after an outage of NATS the live gateway's session was noted: %+v", s)
	}
}
