package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/recorder"
)

// TestStopRunning drives the revoked grant's stop through a relay whose
// statement ends at a given step (or never), as a server answering a
// cancel, only a terminate, or nothing would.
func TestStopRunning(t *testing.T) {
	grantEnded := fmt.Errorf("%w: grant gr_1 was revoked by alice", ErrGrantEnded)
	for _, tc := range []struct {
		name string
		// endsAt is the step after which the statement ends (-1: never);
		// failCancel makes the cancel request fail.
		endsAt     StopStep
		failCancel bool
		idle       bool // no statement running
		wantMeth   []string
		wantOut    string
		wantErrs   int
	}{
		{name: "cancel stops it", endsAt: StopCancel, wantMeth: []string{"cancel"}, wantOut: recorder.StopStopped},
		{name: "terminate after the grace", endsAt: StopTerminate, wantMeth: []string{"cancel", "terminate"}, wantOut: recorder.StopStopped},
		{name: "never stops", endsAt: -1, wantMeth: []string{"cancel", "terminate"}, wantOut: recorder.StopUnconfirmed},
		{name: "cancel cannot be sent", endsAt: StopTerminate, failCancel: true, wantMeth: []string{"cancel", "terminate"}, wantOut: recorder.StopStopped, wantErrs: 1},
		{name: "nothing running", idle: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			srv := &Server{Config: &config.Config{Grants: config.Grants{StopGrace: 50 * time.Millisecond}}}
			s := &Session{ctx: ctx, cancel: cancel, srv: srv, log: slog.New(slog.DiscardHandler)}
			if !tc.idle {
				s.newAdmitted(authz.SingleVerdict(authz.Decision{Text: "select pg_sleep(60)", Allow: true}), 7)
			}
			var done recorder.Result
			f := &fakeRelay{closed: make(chan struct{}), s: s}
			f.interrupt = func(step StopStep) error {
				if step == StopCancel && tc.failCancel {
					return errors.New("dial tcp: connection refused")
				}
				if step == tc.endsAt {
					// The server's answer arrives on the relay.
					go func() {
						s.mu.Lock()
						done = recorder.Result{ID: 7, Executed: true, Error: "canceling statement due to user request", SQLState: "57014"}
						s.finished(&done)
						s.mu.Unlock()
					}()
				}
				return nil
			}
			out := make(chan string)
			go func() { out <- s.Relay(f) }()
			cancel(grantEnded)
			if got := <-out; got != grantEnded.Error() {
				t.Errorf("reason %q", got)
			}
			if told, _ := f.terminated.Load().(string); told == "" {
				t.Error("the client was not told")
			}
			if tc.idle {
				if s.stop != nil {
					t.Errorf("stop recorded with nothing running: %+v", s.stop)
				}
				return
			}
			st := s.stop
			if st == nil {
				t.Fatal("no stop recorded")
			}
			if !slices.Equal(st.Methods, tc.wantMeth) || st.Outcome != tc.wantOut || len(st.Errors) != tc.wantErrs {
				t.Errorf("stop %+v, want methods %v outcome %s and %d errors", st, tc.wantMeth, tc.wantOut, tc.wantErrs)
			}
			if len(st.Running) != 1 || st.Running[0].ID != 7 || st.Running[0].Text != "select pg_sleep(60)" {
				t.Errorf("running %+v", st.Running)
			}
			if tc.wantOut == recorder.StopStopped {
				s.mu.Lock()
				stopped := done.Stopped
				s.mu.Unlock()
				if !slices.Equal(stopped, tc.wantMeth) {
					t.Errorf("the outcome says stopped by %v, want %v", stopped, tc.wantMeth)
				}
			}
		})
	}
}

// A statement whose outcome the protocol says will never come is not
// running.
func TestSettledIsNotRunning(t *testing.T) {
	s := &Session{srv: &Server{}}
	adm := s.newAdmitted(authz.SingleVerdict(authz.Decision{Text: "LANG=C", Allow: true}), 1)
	adm.Settled()
	if r, _ := s.runningNow(); r != nil {
		t.Errorf("running %+v", r)
	}
}

// TestBorrowedTextsAreCopied: a statement's text and parameters may be
// views of the client's read buffer (ViewOf, Server.AppendParam), which
// the next message overwrites. What the session keeps past the message
// are copies: the running statements' texts (for a stop's record), the
// recent texts a hold shows, a hold's parameters and a denial notice's.
func TestBorrowedTextsAreCopied(t *testing.T) {
	s := &Session{srv: &Server{}}
	buf := []byte("select pg_sleep(60)")
	view := unsafe.String(unsafe.SliceData(buf), len(buf))
	s.newAdmitted(authz.SingleVerdict(authz.Decision{Text: view, Allow: true}), 1)
	s.mu.Lock()
	s.remember(view)
	s.mu.Unlock()
	held := paramText(recorder.Param{Value: view, Format: "text"})
	denied := cloneParams([]recorder.Param{{Value: view, Format: "text", Type: view[:6]}})
	copy(buf, "delete from orders!")

	const was = "select pg_sleep(60)"
	if running, _ := s.runningNow(); len(running) != 1 || running[0].Text != was {
		t.Errorf("running %+v, want %q", running, was)
	}
	if len(s.recent) != 1 || s.recent[0] != was {
		t.Errorf("recent %q, want %q", s.recent, was)
	}
	if held != was {
		t.Errorf("a hold's parameter %q, want %q", held, was)
	}
	if denied[0].Value != was || denied[0].Type != "select" {
		t.Errorf("a denial's parameter %+v, want %q", denied[0], was)
	}
}
