package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
)

// fakeRelay is a relay whose Run blocks until Close, as a real one blocks
// on its connections, unless it is told to return by itself.
type fakeRelay struct {
	closed     chan struct{}
	closes     atomic.Int32
	terminated atomic.Value // string
	// ret, when set, is returned by Run at once; before, stop is given to
	// the session's Stop.
	ret, stop string
	s         *Session
	// interrupt, when set, answers Interrupt.
	interrupt func(step StopStep) error
}

func (f *fakeRelay) Interrupt(step StopStep) (string, func(context.Context) error) {
	if f.interrupt == nil {
		return "", nil
	}
	return []string{"cancel", "terminate"}[step], func(context.Context) error { return f.interrupt(step) }
}

func (f *fakeRelay) Run() string {
	if f.stop != "" {
		f.s.Stop(f.stop)
	}
	if f.ret != "" {
		return f.ret
	}
	<-f.closed
	return "relay failed: use of closed network connection"
}

func (f *fakeRelay) Terminate(msg string) { f.terminated.Store(msg) }

func (f *fakeRelay) Close() {
	f.closes.Add(1)
	close(f.closed)
}

func TestRelayLifecycle(t *testing.T) {
	grantEnded := fmt.Errorf("%w: grant gr_1 was revoked by alice", ErrGrantEnded)
	for _, tc := range []struct {
		name      string
		ret, stop string
		cancel    error
		// want is the reason; told what Terminate was given ("" for not
		// called).
		want, told string
	}{
		{name: "client ends", ret: "client disconnected", want: "client disconnected"},
		{name: "first reason counts", stop: "upstream closed the connection", ret: "client disconnected", want: "upstream closed the connection"},
		{name: "revoked", cancel: grantEnded, want: grantEnded.Error(), told: "grant gr_1 was revoked by alice"},
		{name: "shutdown", cancel: ErrShutdown, want: ErrShutdown.Error(), told: ErrShutdown.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			s := &Session{ctx: ctx, cancel: cancel}
			f := &fakeRelay{closed: make(chan struct{}), ret: tc.ret, stop: tc.stop, s: s}
			done := make(chan string)
			go func() { done <- s.Relay(f) }()
			if tc.cancel != nil {
				cancel(tc.cancel)
			}
			got := <-done
			if got != tc.want {
				t.Errorf("reason %q, want %q", got, tc.want)
			}
			if n := f.closes.Load(); n != 1 {
				t.Errorf("Close called %d times, want once", n)
			}
			told, _ := f.terminated.Load().(string)
			if told != tc.told {
				t.Errorf("Terminate told %q, want %q", told, tc.told)
			}
			if s.StopReason() != tc.want {
				t.Errorf("StopReason %q after the relay, want %q", s.StopReason(), tc.want)
			}
			s.Stop("later")
			if n := f.closes.Load(); n != 1 {
				t.Errorf("a Stop after the end closed again (%d closes)", n)
			}
		})
	}
}

func TestEndMessage(t *testing.T) {
	if got := EndMessage(fmt.Errorf("%w: grant gr_1 expired at 2026-12-05T13:00:00Z", ErrGrantEnded)); got != "grant gr_1 expired at 2026-12-05T13:00:00Z" {
		t.Errorf("EndMessage = %q", got)
	}
	if got := EndMessage(errors.New("gateway shutting down")); got != "gateway shutting down" {
		t.Errorf("EndMessage = %q", got)
	}
}
