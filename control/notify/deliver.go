package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/config"
)

// target delivers one notify target's notifications from its durable
// consumer. Every replica runs one; JetStream hands each message to one of
// them at a time.
type target struct {
	n     *Notifier
	cfg   config.NotifyTarget
	key   []byte // standard: the signing key
	where string // scheme://host, what logs show
	cons  jetstream.Consumer
	http  *http.Client
}

// run pulls the target's notifications and delivers up to workers at
// once, so one slow answer does not hold up the next notification.
func (t *target) run() {
	n := t.n
	log := n.log.With("target", t.cfg.Name)
	it, err := t.cons.Messages(jetstream.PullMaxMessages(workers))
	if err != nil {
		log.Error("notification target not followed", "err", err)
		return
	}
	go func() { <-n.ctx.Done(); it.Stop() }()
	sem := make(chan struct{}, workers)
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			break
		}
		if err != nil {
			// Heartbeats missed while NATS is away, a consumer gone:
			// the iterator recovers by itself; do not spin meanwhile.
			log.Debug("notification consumer", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			t.handle(msg)
		}()
	}
	for range workers {
		sem <- struct{}{}
	}
}

// outcome is what one attempt came to.
type outcome struct {
	result     string // ok, timeout, error, 3xx, 4xx, 429, 5xx
	retry      bool
	retryAfter time.Duration
	err        string // for the operator, without the URL's secret parts
}

func (t *target) handle(msg jetstream.Msg) {
	n := t.n
	log := n.log.With("target", t.cfg.Name)
	var x Notification
	if err := json.Unmarshal(msg.Data(), &x); err != nil || x.ID == "" {
		log.Error("unreadable notification given up", "subject", msg.Subject())
		_ = msg.Term()
		t.record(func(s *record) { s.GivenUp++; s.fail("", "", "unreadable notification", n.o.Now()) })
		return
	}
	md, err := msg.Metadata()
	if err != nil {
		_ = msg.Nak()
		return
	}
	// The attempt's context is not the notifier's: Close lets an attempt
	// under way finish within the timeout rather than count it failed.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(n.ctx), t.cfg.Timeout)
	o := t.attempt(ctx, &x)
	cancel()
	now := n.o.Now()
	n.m.attempts.WithLabelValues(t.cfg.Name, o.result).Inc()
	if o.result == "ok" {
		_ = msg.Ack()
		n.m.latency.WithLabelValues(t.cfg.Name).Observe(now.Sub(md.Timestamp).Seconds())
		log.Debug("notification delivered", "id", x.ID, "type", x.Type, "attempt", md.NumDelivered)
		t.record(func(s *record) { s.Attempts++; s.Delivered++; s.LastSuccess = now })
		return
	}
	n.m.failures.WithLabelValues(t.cfg.Name).Inc()
	delay := t.backoff(md.NumDelivered)
	if o.retryAfter > delay {
		delay = min(o.retryAfter, 6*time.Hour)
	}
	if o.retry && now.Add(delay).Sub(md.Timestamp) <= t.cfg.RetryFor {
		_ = msg.NakWithDelay(delay)
		log.Warn("notification delivery failed; will retry", "id", x.ID, "type", x.Type, "attempt", md.NumDelivered, "retry_in", delay, "err", o.err)
		t.record(func(s *record) { s.Attempts++; s.Failures++; s.setError(o.err, now) })
		return
	}
	_ = msg.Term()
	n.m.givenUp.WithLabelValues(t.cfg.Name).Inc()
	why := o.err
	if o.retry {
		why += fmt.Sprintf(" (retried for %s)", now.Sub(md.Timestamp).Round(time.Second))
	}
	log.Error("notification given up", "id", x.ID, "type", x.Type, "attempt", md.NumDelivered, "err", why)
	t.record(func(s *record) { s.Attempts++; s.Failures++; s.GivenUp++; s.fail(x.ID, x.Type, why, now) })
}

// backoff is the wait before retry number attempt (1: the first), doubled
// each time from retry_min up to retry_max, with ±20% jitter so retries of
// many notifications do not arrive together.
func (t *target) backoff(attempt uint64) time.Duration {
	d := t.cfg.RetryMin
	for i := uint64(1); i < attempt && d < t.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, t.cfg.RetryMax)
	j := time.Duration(rand.Int64N(int64(d)/5 + 1))
	if rand.IntN(2) == 0 {
		return d - j
	}
	return d + j
}

// attempt posts x to the target once.
func (t *target) attempt(ctx context.Context, x *Notification) outcome {
	var body []byte
	var err error
	if t.cfg.Format == "slack" {
		body, err = SlackBody(x)
	} else {
		body, err = StandardBody(x)
	}
	if err != nil {
		return outcome{result: "error", err: "encoding: " + err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return outcome{result: "error", err: "bad request to " + t.where}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "airlock-notify")
	if t.key != nil {
		ts := t.n.o.Now()
		req.Header.Set("webhook-id", x.ID)
		req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
		req.Header.Set("webhook-signature", Sign(t.key, x.ID, ts, body))
	}
	resp, err := t.http.Do(req)
	if err != nil {
		o := outcome{result: "error", retry: true, err: redactErr(err, t.where)}
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			o.result = "timeout"
			o.err = fmt.Sprintf("POST %s: no answer within %s", t.where, t.cfg.Timeout)
		}
		return o
	}
	// Drain a little so the connection can be reused; the body is not
	// needed, and a large one is not read.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	code := resp.StatusCode
	msg := fmt.Sprintf("POST %s: %s", t.where, resp.Status)
	if s := printable(snippet); s != "" {
		msg += ": " + s
	}
	switch {
	case code >= 200 && code < 300:
		return outcome{result: "ok"}
	case code == http.StatusTooManyRequests:
		return outcome{result: "429", retry: true, retryAfter: retryAfter(resp.Header.Get("Retry-After"), t.n.o.Now()), err: msg}
	case code >= 500:
		return outcome{result: "5xx", retry: true, retryAfter: retryAfter(resp.Header.Get("Retry-After"), t.n.o.Now()), err: msg}
	case code == http.StatusRequestTimeout:
		return outcome{result: "4xx", retry: true, err: msg}
	case code >= 300 && code < 400:
		return outcome{result: "3xx", err: msg + " (redirects are not followed: configure the final URL)"}
	default:
		return outcome{result: "4xx", err: msg}
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// printable keeps the start of a target's answer that is plain text, for
// the status's last error.
func printable(b []byte) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			out = append(out, c)
		} else if c == '\n' || c == '\t' {
			out = append(out, ' ')
		}
	}
	return string(bytes.TrimSpace(out))
}
