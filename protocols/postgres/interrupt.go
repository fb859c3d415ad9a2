package postgres

import (
	"context"
	"fmt"
	"strconv"

	"github.com/airlockhq/airlock/proxy"
)

// Interrupt implements proxy.Relay: first a CancelRequest with the
// upstream backend's key, as the client's own cancel would send (the
// statement fails with 57014 and a transaction it ran in is aborted);
// then, for a statement that ignores cancels, pg_terminate_backend on a
// connection of its own with the resource's credentials (57P01: the
// transaction is rolled back). A role may terminate its own backends, so
// the resource's user always may.
func (s *session) Interrupt(step proxy.StopStep) (string, func(context.Context) error) {
	switch step {
	case proxy.StopCancel:
		return "cancel", func(ctx context.Context) error {
			return within(ctx, func() error { return sendCancel(s.sess.Resource().Address, s.up.pid, s.up.key) })
		}
	case proxy.StopTerminate:
		return "terminate", s.terminateBackend
	}
	return "", nil
}

// terminateBackend ends the session's upstream backend.
func (s *session) terminateBackend(ctx context.Context) error {
	pc, err := s.p.connect(ctx, s.sess.Resource(), map[string]string{"application_name": "airlock (stopping session " + s.sess.ID + ")"})
	if err != nil {
		return err
	}
	defer pc.Close(ctx)
	rr := pc.ExecParams(ctx, "select pg_terminate_backend($1)", [][]byte{[]byte(strconv.FormatUint(uint64(s.up.pid), 10))}, nil, nil, nil).Read()
	if rr.Err != nil {
		return rr.Err
	}
	if len(rr.Rows) != 1 || string(rr.Rows[0][0]) != "t" {
		return fmt.Errorf("pg_terminate_backend(%d) returned false: the backend had already ended", s.up.pid)
	}
	return nil
}

// within runs f and returns its error, or ctx's once ctx ends first (f
// then finishes on its own).
func within(ctx context.Context, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
