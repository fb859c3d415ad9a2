package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/natsconn"
)

// DefaultHoldsBucket is the key-value bucket of held statements when the
// configuration names none (grants.holds_bucket).
const DefaultHoldsBucket = "airlock_holds"

// HoldRetention is how long the holds bucket keeps a hold after its last
// change: long enough to read what was decided, and who decided, later.
// The record of what ran is the session's events, not this bucket.
const HoldRetention = 7 * 24 * time.Hour

// ErrNoHold is returned for an unknown hold id.
var ErrNoHold = errors.New("no such hold")

// HoldStore keeps held statements in a JetStream key-value bucket, one key
// per hold, so that the session waiting on a hold (on one gateway replica)
// hears at once of a decision made through any replica: the waiter watches
// its key, and every change is an optimistic-concurrency update on the
// revision its writer read, so exactly one decision wins.
type HoldStore struct {
	kv   jetstream.KeyValue
	log  *slog.Logger
	now  func() time.Time
	held func(*authz.Hold)
}

// OnHeld sets fn to be told of each hold once it is stored as pending, on
// the replica where its statement waits (the notifier's statement.held).
// fn must not block. Set it before the store is used.
func (s *HoldStore) OnHeld(fn func(*authz.Hold)) { s.held = fn }

// HoldStoreOptions configures OpenHoldStore.
type HoldStoreOptions struct {
	// Bucket is the key-value bucket (DefaultHoldsBucket if empty).
	Bucket   string
	Replicas int
	Logger   *slog.Logger
	// Now is the clock (time.Now if nil); tests set it.
	Now func() time.Time
}

// OpenHoldStore creates the holds bucket if needed (or updates its
// settings), trying again while the request goes unanswered, until ctx
// ends or the server refuses it for want of permission
// (natsconn.Denied(nc, "KV_"+bucket) tells).
func OpenHoldStore(ctx context.Context, js jetstream.JetStream, o HoldStoreOptions) (*HoldStore, error) {
	if o.Bucket == "" {
		o.Bucket = DefaultHoldsBucket
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	now := o.Now
	if now == nil {
		now = func() time.Time { return time.Now().UTC() }
	}
	kv, err := openKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      o.Bucket,
		Description: "airlock statements held for an approver",
		History:     8,
		TTL:         HoldRetention,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("control: holds bucket %q: %w", o.Bucket, err)
	}
	return &HoldStore{kv: kv, log: logger, now: now}, nil
}

// NewHoldID returns a fresh hold id ("hd_" and 80 random bits).
func NewHoldID() string { return newID("hd_") }

// Wait stores h as pending and waits for a person to decide it. h.ID is
// generated if empty; h.CreatedAt defaults to now; h.ExpiresAt must be
// set. The hold is created, never overwritten: an id already in the
// bucket is an error.
//
// It returns the hold as it ended:
//   - approved or denied, by whoever decided it through any replica
//     (Decide), as soon as the bucket has it;
//   - expired, once h.ExpiresAt passes undecided;
//   - cancelled, when ctx ends first (the client cancelled, the session
//     ended), with Comment = context.Cause(ctx).Error().
//
// Expiry and cancellation are written like a decision, on the revision
// last seen, so a decision that got there first wins and is what Wait
// returns: only an approved hold may run. An error means the outcome is
// unknown: the caller must refuse the statement.
func (s *HoldStore) Wait(ctx context.Context, h *authz.Hold) (*authz.Hold, error) {
	if h == nil {
		return nil, errors.New("control: nil hold")
	}
	if h.ExpiresAt.IsZero() {
		return nil, errors.New("control: a hold needs ExpiresAt")
	}
	c := *h
	if c.ID == "" {
		c.ID = NewHoldID()
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = s.now()
	}
	c.State, c.DecidedBy, c.DecidedAt, c.Comment = authz.HoldPending, "", time.Time{}, ""
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, err
	}
	// Stored even if ctx ends meanwhile: the hold is then cancelled on
	// the record, not lost.
	wctx, cancel := withWriteTimeout(context.WithoutCancel(ctx))
	_, err = retryWrite(wctx, func(ctx context.Context) (uint64, error) {
		rev, err := s.kv.Create(ctx, c.ID, b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			// An earlier attempt whose answer was lost stored it.
			if e, gerr := s.kv.Get(ctx, c.ID); gerr == nil && string(e.Value()) == string(b) {
				return e.Revision(), nil
			}
			return 0, fmt.Errorf("hold %s exists already", c.ID)
		}
		return rev, err
	})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("control: storing hold %s: %w", c.ID, err)
	}
	if s.held != nil {
		told := c
		s.held(&told)
	}

	// The watcher delivers the key's latest value first, so a decision
	// made between the Create and here is not missed.
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer wcancel()
	w, err := s.kv.Watch(wctx, c.ID)
	if err != nil {
		return s.finish(ctx, c.ID, authz.HoldCancelled, "could not watch the hold: "+err.Error())
	}
	defer func() { _ = w.Stop() }()
	timer := time.NewTimer(c.ExpiresAt.Sub(s.now()))
	defer timer.Stop()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return s.finish(ctx, c.ID, authz.HoldCancelled, "the hold's watcher ended")
			}
			if e == nil {
				continue // the initial values are all delivered
			}
			if e.Operation() != jetstream.KeyValuePut {
				return nil, fmt.Errorf("control: hold %s was deleted from the bucket while waiting", c.ID)
			}
			got, err := decodeHold(e)
			if err != nil {
				return nil, err
			}
			if got.State != authz.HoldPending {
				return got, nil
			}
		case <-timer.C:
			return s.finish(ctx, c.ID, authz.HoldExpired,
				fmt.Sprintf("no approver decided within %s", c.ExpiresAt.Sub(c.CreatedAt).Round(time.Second)))
		case <-ctx.Done():
			return s.finish(ctx, c.ID, authz.HoldCancelled, context.Cause(ctx).Error())
		}
	}
}

// finish ends a pending hold as expired or cancelled, with a
// compare-and-set on the revision it reads; if another writer got there
// first, its decision is returned instead.
func (s *HoldStore) finish(ctx context.Context, id string, state authz.HoldState, why string) (*authz.Hold, error) {
	wctx, cancel := withWriteTimeout(context.WithoutCancel(ctx))
	defer cancel()
	h, err := s.change(wctx, id, func(h *authz.Hold) error {
		if h.State != authz.HoldPending {
			return errDecided
		}
		h.State, h.DecidedAt, h.Comment = state, s.now(), why
		h.DecidedBy = ""
		return nil
	})
	if errors.Is(err, errDecided) {
		return h, nil
	}
	return h, err
}

// errDecided stops change: the hold is no longer pending; change returns
// it as it is, with this error.
var errDecided = errors.New("hold decided")

// change applies fn to hold id under optimistic concurrency: it reads the
// hold, and updates it on the revision read, reading again when another
// writer got there first. When fn fails, change returns the hold as read
// with fn's error.
func (s *HoldStore) change(ctx context.Context, id string, fn func(*authz.Hold) error) (*authz.Hold, error) {
	var (
		cur  *authz.Hold
		sent []byte // the last value written whose answer may have been lost
	)
	for attempt := 0; attempt < 10; attempt++ {
		var e jetstream.KeyValueEntry
		_, err := retryWrite(ctx, func(ctx context.Context) (uint64, error) {
			var err error
			e, err = s.kv.Get(ctx, id)
			return 0, err
		})
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil, ErrNoHold
		}
		if err != nil {
			return nil, fmt.Errorf("control: reading hold %s: %w", id, err)
		}
		cur, err = decodeHold(e)
		if err != nil {
			return nil, err
		}
		if sent != nil && string(e.Value()) == string(sent) {
			return cur, nil // our write whose answer was lost was stored
		}
		next := *cur
		if err := fn(&next); err != nil {
			return cur, err
		}
		b, err := json.Marshal(&next)
		if err != nil {
			return nil, err
		}
		sent = b
		_, err = retryWrite(ctx, func(ctx context.Context) (uint64, error) {
			return s.kv.Update(ctx, id, b, e.Revision())
		})
		switch {
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			continue // lost the race (or our own retried write won it); read again
		case err != nil:
			return nil, fmt.Errorf("control: updating hold %s: %w", id, err)
		}
		return &next, nil
	}
	return cur, fmt.Errorf("control: hold %s is changing too often; try again", id)
}

func decodeHold(e jetstream.KeyValueEntry) (*authz.Hold, error) {
	h := new(authz.Hold)
	if err := json.Unmarshal(e.Value(), h); err != nil {
		return nil, fmt.Errorf("control: hold %s unreadable: %w", e.Key(), err)
	}
	return h, nil
}

// effective is h as callers see it: a pending hold past its deadline reads
// expired (its session is gone, or about to mark it so).
func (s *HoldStore) effective(h *authz.Hold) *authz.Hold {
	if h.State == authz.HoldPending && !h.ExpiresAt.IsZero() && !s.now().Before(h.ExpiresAt) {
		c := *h
		c.State = authz.HoldExpired
		if c.Comment == "" {
			c.Comment = "no approver decided in time"
		}
		return &c
	}
	return h
}

// Get returns hold id (ErrNoHold if unknown).
func (s *HoldStore) Get(ctx context.Context, id string) (*authz.Hold, error) {
	if !ValidHoldID(id) {
		return nil, ErrNoHold
	}
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, ErrNoHold
	}
	if err != nil {
		return nil, fmt.Errorf("control: reading hold %s: %w", id, err)
	}
	h, err := decodeHold(e)
	if err != nil {
		return nil, err
	}
	return s.effective(h), nil
}

// ValidHoldID reports whether id is a key the bucket accepts, so a bad id is "not found"
// rather than an error from the bucket.
func ValidHoldID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// ValidHoldState reports whether s names a hold state ("" is every one).
func ValidHoldState(s authz.HoldState) bool {
	switch s {
	case "", authz.HoldPending, authz.HoldApproved, authz.HoldDenied, authz.HoldExpired, authz.HoldCancelled:
		return true
	}
	return false
}

// List returns the holds in state (every hold if empty), newest first. A
// pending hold past its deadline counts as expired.
func (s *HoldStore) List(ctx context.Context, state authz.HoldState) ([]*authz.Hold, error) {
	if !ValidHoldState(state) {
		return nil, fmt.Errorf("hold state %q: want pending, approved, denied, expired or cancelled", state)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.kv.WatchAll(wctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("control: listing holds: %w", err)
	}
	defer func() { _ = w.Stop() }()
	out := []*authz.Hold{}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("control: listing holds: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("control: listing holds: watcher closed")
			}
			if e == nil {
				sort.Slice(out, func(i, j int) bool {
					if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
						return out[i].CreatedAt.After(out[j].CreatedAt)
					}
					return out[i].ID > out[j].ID
				})
				return out, nil
			}
			h, err := decodeHold(e)
			if err != nil {
				s.log.Error("hold record unreadable", "key", e.Key(), "err", err)
				continue
			}
			h = s.effective(h)
			if state == "" || h.State == state {
				out = append(out, h)
			}
		}
	}
}

// Decide approves or denies pending hold id on behalf of by. A denial
// needs a reason (comment); an approval's comment is optional. A hold that
// is no longer pending (decided, expired, cancelled) is not changed: the
// error is a *UserError with status 409 that says what happened to it. An
// unknown id is a 404 one.
func (s *HoldStore) Decide(ctx context.Context, id string, approve bool, by, comment string) (*authz.Hold, error) {
	comment = strings.TrimSpace(comment)
	if !approve && comment == "" {
		return nil, userErr(400, "a reason is required to deny a held statement (the agent's client is told it)")
	}
	if len(comment) > 1000 {
		return nil, userErr(400, "the comment is longer than 1000 characters")
	}
	if by == "" {
		return nil, userErr(400, "who decides must be named")
	}
	if !ValidHoldID(id) {
		return nil, userErr(404, "no hold %s", id)
	}
	state := authz.HoldDenied
	if approve {
		state = authz.HoldApproved
	}
	ctx, cancel := withWriteTimeout(ctx)
	defer cancel()
	h, err := s.change(ctx, id, func(h *authz.Hold) error {
		if h.State != authz.HoldPending {
			return errDecided
		}
		if !s.now().Before(h.ExpiresAt) {
			return errLate
		}
		h.State, h.DecidedBy, h.DecidedAt, h.Comment = state, by, s.now(), comment
		return nil
	})
	switch {
	case errors.Is(err, ErrNoHold):
		return nil, userErr(404, "no hold %s", id)
	case errors.Is(err, errLate):
		return nil, userErr(409, "hold %s expired at %s without a decision; the statement was refused", id, h.ExpiresAt.Format(time.RFC3339))
	case errors.Is(err, errDecided):
		return nil, userErr(409, "%s", settled(h))
	}
	return h, err
}

// errLate: a pending hold past its deadline, which its waiter is marking
// expired (or whose waiter is gone).
var errLate = errors.New("hold expired")

// settled says what became of a hold that is no longer pending.
func settled(h *authz.Hold) string {
	switch h.State {
	case authz.HoldApproved, authz.HoldDenied:
		msg := fmt.Sprintf("hold %s was already %s by %s at %s", h.ID, h.State, h.DecidedBy, h.DecidedAt.Format(time.RFC3339))
		if h.Comment != "" {
			msg += " (" + h.Comment + ")"
		}
		return msg
	case authz.HoldExpired:
		return fmt.Sprintf("hold %s expired at %s without a decision; the statement was refused", h.ID, h.DecidedAt.Format(time.RFC3339))
	case authz.HoldCancelled:
		return fmt.Sprintf("hold %s was cancelled at %s (%s); the statement did not run", h.ID, h.DecidedAt.Format(time.RFC3339), h.Comment)
	}
	return fmt.Sprintf("hold %s is %s, not pending", h.ID, h.State)
}

// openKV creates or updates a key-value bucket, trying again while the
// request goes unanswered (the cluster electing, a leader moving) until
// ctx ends or the server refuses it for want of permission.
func openKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout*2)
		kv, err := js.CreateOrUpdateKeyValue(actx, cfg)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) || natsconn.Denied(js.Conn(), "KV_"+cfg.Bucket) {
			return kv, err
		}
	}
}

// Follow calls fn with every hold in the bucket, then with each hold as it
// is created or changes, through any replica, until ctx ends. fn runs on
// one goroutine and must not block. The console's live pages use it.
//
// When the watch breaks (NATS away for longer than the watcher survives),
// it is started again after a pause and delivers every hold again, so fn
// must take a hold it has seen before in its stride.
func (s *HoldStore) Follow(ctx context.Context, fn func(*authz.Hold)) {
	for ctx.Err() == nil {
		if err := s.follow(ctx, fn); err != nil && ctx.Err() == nil {
			s.log.Warn("following the holds bucket", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *HoldStore) follow(ctx context.Context, fn func(*authz.Hold)) error {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("the watcher ended")
			}
			if e == nil {
				continue // the initial values are all delivered
			}
			h, err := decodeHold(e)
			if err != nil {
				s.log.Error("hold record unreadable", "key", e.Key(), "err", err)
				continue
			}
			fn(s.effective(h))
		}
	}
}
