package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/recorder"
)

const (
	// startAttemptMin and startAttemptMax bound one attempt at a start
	// step. A server without a JetStream leader yet does not answer at
	// all, so a short first attempt asks again soon after the election;
	// later attempts get longer, for a cluster that is merely slow.
	startAttemptMin = 3 * time.Second
	startAttemptMax = 24 * time.Second
	// startBackoffMin and startBackoffMax bound the pause between attempts:
	// short at first (an election takes seconds), then at most a few
	// seconds, so the gateway is ready soon after the cluster is.
	startBackoffMin = 250 * time.Millisecond
	startBackoffMax = 4 * time.Second
)

// starter runs the gateway's start steps that depend on NATS, each until
// it succeeds, fails for good, or the start's context ends
// (recorder.start_timeout). It tells the HTTP listener what it waits for.
type starter struct {
	status *control.Startup
	log    *slog.Logger
	// timeout is recorder.start_timeout, named in the error; 0 is none.
	timeout time.Duration
}

// waitFor runs try until it succeeds and returns its value. Between
// attempts it waits with backoff and logs what it waits for and why. An
// error that waiting cannot mend (see permanent) is returned at once.
func waitFor[T any](ctx context.Context, s *starter, what string, try func(ctx context.Context) (T, error)) (T, error) {
	s.status.Waiting(what)
	began := time.Now()
	pause, limit := startBackoffMin, startAttemptMin
	for n := 1; ; n++ {
		actx, cancel := context.WithTimeout(ctx, limit)
		limit = min(2*limit, startAttemptMax)
		v, err := try(actx)
		cancel()
		if err == nil {
			if n > 1 {
				s.log.Info("start: ready", "waited_for", what, "after", time.Since(began).Round(time.Millisecond), "attempts", n)
			}
			return v, nil
		}
		if permanent(err) {
			return v, err
		}
		if ctx.Err() != nil {
			return v, s.gaveUp(ctx, what, began, n, err)
		}
		s.status.Failed(n, err)
		// The first failure is worth a warning; later ones repeat it.
		level := slog.LevelInfo
		if n == 1 {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "start: waiting", "for", what, "attempt", n, "waited", time.Since(began).Round(time.Millisecond), "err", err)
		// Jitter keeps replicas that start together from asking in step.
		d := pause/2 + rand.N(pause/2+1)
		select {
		case <-ctx.Done():
			return v, s.gaveUp(ctx, what, began, n, err)
		case <-time.After(d):
		}
		pause = min(2*pause, startBackoffMax)
	}
}

// gaveUp is the error when the start's context ended while waiting.
func (s *starter) gaveUp(ctx context.Context, what string, began time.Time, attempts int, last error) error {
	if errors.Is(context.Cause(ctx), errStartTimeout) {
		return fmt.Errorf("start: gave up waiting for %s after %s (recorder.start_timeout %s; %d attempts; last error: %w)",
			what, time.Since(began).Round(time.Second), s.timeout, attempts, last)
	}
	return fmt.Errorf("start: stopped while waiting for %s: %w", what, context.Cause(ctx))
}

// errStartTimeout is the cause of the start's context when
// recorder.start_timeout passes.
var errStartTimeout = errors.New("recorder.start_timeout passed")

// permanent reports whether err is one that waiting cannot mend, so the
// gateway stops at once and says so instead of waiting out
// recorder.start_timeout. Anything else (no server reachable, a
// JetStream without a leader yet, a timeout) is worth another attempt.
func permanent(err error) bool {
	var st *stopError
	if errors.As(err, &st) ||
		errors.Is(err, natsconn.ErrServerUnsupported) ||
		errors.Is(err, natsconn.ErrCredentials) ||
		errors.Is(err, recorder.ErrStreamConfig) ||
		errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) ||
		errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrNkeysNotSupported) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount,
			jetstream.JSErrCodeStreamNameInUse, jsErrCodeReplicasNotSupported, jsErrCodeStreamInvalidConfig:
			return true
		}
	}
	return false
}

// stopError marks an error that must end the start at once.
type stopError struct{ err error }

func (e *stopError) Error() string { return e.err.Error() }
func (e *stopError) Unwrap() error { return e.err }

// stop marks err as one another attempt would not mend.
func stop(err error) error {
	if err == nil {
		return nil
	}
	return &stopError{err}
}

// JetStream error codes (nats-server's errors.json) that a configuration
// change, not time, mends.
const (
	jsErrCodeStreamInvalidConfig  jetstream.ErrorCode = 10052
	jsErrCodeReplicasNotSupported jetstream.ErrorCode = 10074 // replicas > 1 not supported in non-clustered mode
)
