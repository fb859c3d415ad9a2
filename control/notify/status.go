package notify

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// record is a target's delivery counts, kept in the status bucket and
// updated by whichever replica delivered, so `airlock notify status`
// shows all replicas' work.
type record struct {
	Attempts    uint64    `json:"attempts"`
	Delivered   uint64    `json:"delivered"`
	Failures    uint64    `json:"failures"`
	GivenUp     uint64    `json:"given_up"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// GaveUp are the last notifications given up, newest last.
	GaveUp []Failure `json:"gave_up,omitempty"`
}

// Failure is a notification given up.
type Failure struct {
	ID    string    `json:"id,omitempty"`
	Type  string    `json:"type,omitempty"`
	Time  time.Time `json:"time"`
	Error string    `json:"error"`
}

const keepFailures = 10

func (s *record) setError(e string, at time.Time) { s.LastError, s.LastErrorAt = e, at }

func (s *record) fail(id, typ, e string, at time.Time) {
	s.setError(e, at)
	s.GaveUp = append(s.GaveUp, Failure{ID: id, Type: typ, Time: at, Error: e})
	if len(s.GaveUp) > keepFailures {
		s.GaveUp = s.GaveUp[len(s.GaveUp)-keepFailures:]
	}
}

// record applies change to the target's counts with compare-and-set,
// trying again when another replica wrote first.
func (t *target) record(change func(*record)) {
	kv := t.n.kv
	for range 10 {
		// Not the notifier's context: an attempt that ends as the
		// notifier closes is still counted.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var s record
		var rev uint64
		e, err := kv.Get(ctx, t.cfg.Name)
		switch {
		case err == nil:
			rev = e.Revision()
			_ = json.Unmarshal(e.Value(), &s)
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			cancel()
			t.n.log.Warn("notification status not updated", "target", t.cfg.Name, "err", err)
			return
		}
		change(&s)
		b, _ := json.Marshal(&s)
		if rev == 0 {
			_, err = kv.Create(ctx, t.cfg.Name, b)
		} else {
			_, err = kv.Update(ctx, t.cfg.Name, b, rev)
		}
		cancel()
		if err == nil {
			return
		}
	}
	t.n.log.Warn("notification status not updated: too many concurrent writers", "target", t.cfg.Name)
}

// TargetStatus is one target as GET /v1/notify and `airlock notify
// status` show it.
type TargetStatus struct {
	Name   string   `json:"name"`
	URL    string   `json:"url"` // scheme and host only
	Format string   `json:"format"`
	Events []string `json:"events"`
	// Notifications counts what was sent to the target: delivered, given
	// up and pending.
	Notifications uint64 `json:"notifications"`
	Delivered     uint64 `json:"delivered"`
	// Pending are not delivered yet: waiting, being attempted, or waiting
	// for a retry; Retrying are those of them attempted before.
	Pending  uint64 `json:"pending"`
	Retrying uint64 `json:"retrying"`
	// OldestPending is when the oldest undelivered notification was
	// stored.
	OldestPending *time.Time `json:"oldest_pending,omitempty"`
	GivenUp       uint64     `json:"given_up"`
	Attempts      uint64     `json:"attempts"`
	Failures      uint64     `json:"failures"`
	LastSuccess   *time.Time `json:"last_success,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	LastErrorAt   *time.Time `json:"last_error_at,omitempty"`
	GaveUp        []Failure  `json:"gave_up,omitempty"`
}

// Status reports every target, all replicas' work together.
func (n *Notifier) Status(ctx context.Context) ([]TargetStatus, error) {
	out := []TargetStatus{}
	if n == nil {
		return out, nil
	}
	for _, t := range n.targets {
		st := TargetStatus{Name: t.cfg.Name, URL: t.where, Format: t.cfg.Format, Events: t.cfg.Events}
		var s record
		e, err := n.kv.Get(ctx, t.cfg.Name)
		if err == nil {
			_ = json.Unmarshal(e.Value(), &s)
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, err
		}
		info, err := t.cons.Info(ctx)
		if err != nil {
			return nil, err
		}
		st.Delivered, st.GivenUp, st.Attempts, st.Failures = s.Delivered, s.GivenUp, s.Attempts, s.Failures
		st.Pending = info.NumPending + uint64(info.NumAckPending)
		st.Retrying = uint64(info.NumRedelivered)
		st.Notifications = st.Delivered + st.GivenUp + st.Pending
		if st.Pending > 0 {
			if at, ok := t.oldestPending(ctx, info); ok {
				st.OldestPending = &at
			}
		}
		if !s.LastSuccess.IsZero() {
			st.LastSuccess = &s.LastSuccess
		}
		if s.LastError != "" {
			st.LastError, st.LastErrorAt = s.LastError, &s.LastErrorAt
		}
		st.GaveUp = s.GaveUp
		n.m.pending.WithLabelValues(t.cfg.Name).Set(float64(st.Pending))
		out = append(out, st)
	}
	return out, nil
}

// oldestPending is when the target's oldest undelivered notification was
// stored: the first message after the consumer's acknowledgement floor
// on any of its subjects (all before the floor are acknowledged).
func (t *target) oldestPending(ctx context.Context, info *jetstream.ConsumerInfo) (time.Time, bool) {
	var oldest time.Time
	for _, e := range t.cfg.Events {
		m, err := t.n.stream.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(SubjectPrefix+"."+e))
		if err != nil {
			continue // none on this subject
		}
		if oldest.IsZero() || m.Time.Before(oldest) {
			oldest = m.Time
		}
	}
	return oldest.UTC(), !oldest.IsZero()
}

// refreshPending keeps the pending gauges current for Prometheus.
func (n *Notifier) refreshPending() {
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		for _, t := range n.targets {
			if info, err := t.cons.Info(ctx); err == nil {
				pending := info.NumPending + uint64(info.NumAckPending)
				n.m.pending.WithLabelValues(t.cfg.Name).Set(float64(pending))
				age := 0.0
				if at, ok := t.oldestPending(ctx, info); ok && pending > 0 {
					age = n.o.Now().Sub(at).Seconds()
				}
				n.m.oldest.WithLabelValues(t.cfg.Name).Set(age)
			}
		}
		cancel()
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
	}
}
