package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/control"
	"github.com/airlockhq/airlock/natsconn"
	"github.com/airlockhq/airlock/recorder"
)

func TestPermanent(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("x: %w", natsconn.ErrServerUnsupported),
		fmt.Errorf("x: %w", natsconn.ErrCredentials),
		fmt.Errorf("recorder: %w", recorder.ErrStreamConfig),
		fmt.Errorf("natsconn: connect: %w", nats.ErrAuthorization),
		fmt.Errorf("read: %w", fs.ErrNotExist),
		stop(errors.New("embedded server store locked")),
		fmt.Errorf("stream: %w", &jetstream.APIError{ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}),
	} {
		if !permanent(err) {
			t.Errorf("%v: retried, want a stop", err)
		}
	}
	for _, err := range []error{
		fmt.Errorf("connect: %w", nats.ErrNoServers),
		context.DeadlineExceeded,
		fmt.Errorf("stream: %w", &jetstream.APIError{ErrorCode: 10008, Code: 503, Description: "JetStream system temporarily unavailable"}),
		fmt.Errorf("stream: %w", &jetstream.APIError{ErrorCode: 10005, Code: 400, Description: "no suitable peers for placement"}),
		nats.ErrTimeout,
	} {
		if permanent(err) {
			t.Errorf("%v: a stop, want another attempt", err)
		}
	}
}

func TestWaitFor(t *testing.T) {
	st := &starter{status: &control.Startup{}, log: slog.New(slog.DiscardHandler), timeout: 400 * time.Millisecond}

	// Succeeds on the third attempt.
	n := 0
	v, err := waitFor(context.Background(), st, "thing", func(context.Context) (int, error) {
		n++
		if n < 3 {
			return 0, errors.New("not yet")
		}
		return 42, nil
	})
	if err != nil || v != 42 || n != 3 {
		t.Fatalf("got %d after %d attempts: %v", v, n, err)
	}

	// A permanent error stops at once.
	n = 0
	_, err = waitFor(context.Background(), st, "thing", func(context.Context) (int, error) {
		n++
		return 0, stop(errors.New("broken"))
	})
	if err == nil || n != 1 {
		t.Fatalf("permanent error: %d attempts, %v", n, err)
	}

	// The start timeout ends the wait with an error naming what, the key
	// and the last error; meanwhile the status says what it waits for.
	ctx, cancel := context.WithTimeoutCause(context.Background(), 400*time.Millisecond, errStartTimeout)
	defer cancel()
	seen := make(chan string, 1)
	_, err = waitFor(ctx, st, "JetStream stream S", func(context.Context) (int, error) {
		if s, starting := st.status.Status(); starting {
			select {
			case seen <- s.WaitingFor:
			default:
			}
		}
		return 0, errors.New("no leader")
	})
	for _, want := range []string{"gave up waiting for JetStream stream S", "recorder.start_timeout 400ms", "no leader"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("timeout error %v does not say %q", err, want)
		}
	}
	if w := <-seen; w != "JetStream stream S" {
		t.Errorf("status said it waits for %q", w)
	}
	if s, _ := st.status.Status(); s.Attempts == 0 || !strings.Contains(s.Error, "no leader") {
		t.Errorf("status after the failures: %+v", s)
	}
}
