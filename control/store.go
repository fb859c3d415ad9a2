// Package control is the gateway's control plane: grants and requests kept
// in a JetStream key-value bucket, watched so every gateway replica sees a
// change at once, and the HTTP API that agents, approvers and reviewers use.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/natsconn"
)

// ErrNotSynced is returned while the store cannot confirm it holds every
// grant change acknowledged until ConfirmWithin ago: at start, and when no
// bucket's leader has answered for that long (NATS lost, or every bucket
// electing). The gateway refuses sessions and statements meanwhile, so a
// revocation is never missed for longer than that.
var ErrNotSynced = errors.New("grant store not synchronized with NATS")

// ErrNoGrant is returned for an unknown grant id.
var ErrNoGrant = errors.New("no such grant")

// ConfirmWithin is how long the store trusts its copy of the grants
// without a bucket's leader confirming that nothing newer exists. It is the
// bound on how long a replica that missed a revocation's notice can still
// admit statements under the revoked grant, counted from the revocation's
// acknowledgement (docs/architecture.md, "Revocation reaches every
// replica").
const ConfirmWithin = time.Second

const (
	// pollEvery is how often each bucket's leader is asked for changes
	// past the newest revision the store has; a change found is followed
	// at once by the next request.
	pollEvery = 200 * time.Millisecond
	// pollTimeout bounds one request; an answer later than ConfirmWithin
	// could not confirm anything anyway.
	pollTimeout = ConfirmWithin
	// writeTimeout bounds a grant change whose caller set no deadline. A
	// bucket whose leader's server died elects a new one within 4-9 s; a
	// change waits for that rather than failing.
	writeTimeout = 20 * time.Second
	// attemptTimeout bounds one write attempt, so a write sent into an
	// election is tried again soon after it ends.
	attemptTimeout = 2 * time.Second
	// standbySuffix names the standby bucket after the grants bucket.
	standbySuffix = "_standby"
	// reconcileEvery is how often the buckets are compared and a grant one
	// holds further on copied to the other (a writer that failed between
	// the two, or an older gateway replica writing only the first).
	reconcileEvery = 30 * time.Second
)

// Store keeps grants in a key-value bucket and a synchronized copy in
// memory, so lookups on the connection path never touch the network.
//
// On a cluster it keeps every grant in two buckets, the grants bucket and
// its standby (<bucket>_standby), whose leaders it keeps on different
// servers: a change is acknowledged once both buckets stored it, and the
// copy in memory is current once either bucket's leader confirms it, so
// losing any one server leaves the store confirmable (and changes waiting
// at most for the other bucket's election). See docs/architecture.md.
type Store struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	api     string    // JetStream API subject prefix
	buckets []*bucket // [0] the grants bucket, [1] its standby
	notices *nats.Subscription
	subject string // revocation notices

	// confirmed is when (nanoseconds since t0) the newest request that
	// found the store current was sent; 0: never.
	t0        time.Time
	confirmed atomic.Int64

	mu     sync.RWMutex
	grants map[string]*authz.Grant // what lookups see: the buckets merged
	// revoking holds revocation notices not yet seen in a bucket.
	revoking map[string]notice
	watchFn  []func(*authz.Grant)

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// bucket is one key-value bucket of grants and what the store has read of
// it.
type bucket struct {
	name   string
	stream string // KV_<name>
	prefix string // $KV.<name>.
	kv     jetstream.KeyValue
	// recs is the furthest state of each grant read from this bucket
	// (under Store.mu).
	recs map[string]record
	// rev is the newest revision read (by its poller only, after start).
	rev uint64
	// wake makes the poller ask now (a notice came).
	wake chan struct{}
}

// record is a grant as one bucket holds it; g is nil for a deleted key.
type record struct {
	g   *authz.Grant
	rev uint64
}

// StoreOptions configures OpenStore.
type StoreOptions struct {
	Bucket   string
	Replicas int
	// Standby keeps every grant in a second bucket as well (on a
	// cluster, with Replicas > 1), so the store stays confirmable and
	// writable while one bucket elects a leader.
	Standby bool
	Logger  *slog.Logger
}

// OpenStore creates the buckets if needed, reads them, and keeps following
// them until Close.
func OpenStore(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, o StoreOptions) (*Store, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	names := []string{o.Bucket}
	if o.Standby {
		names = append(names, o.Bucket+standbySuffix)
	}
	s := &Store{
		nc: nc, js: js, log: logger, api: natsconn.APIPrefix(js),
		subject: "airlock.revocations." + o.Bucket,
		t0:      time.Now(),
		grants:  map[string]*authz.Grant{}, revoking: map[string]notice{},
	}
	for i, name := range names {
		kv, err := openBucket(ctx, js, name, o.Replicas)
		if err != nil && i > 0 && natsconn.Denied(nc, "KV_"+name) {
			// Without it the store works as before, with one bucket: an
			// operator who upgraded the gateway but not the NATS
			// permissions keeps a working gateway, told why in the log.
			logger.Warn("grants standby bucket off: the gateway's NATS user may not use it (see deploy/nats/accounts.conf)",
				"bucket", name, "err", nc.LastError())
			break
		}
		if err != nil {
			return nil, fmt.Errorf("control: grants bucket %q: %w", name, err)
		}
		s.buckets = append(s.buckets, &bucket{
			name: name, stream: "KV_" + name, prefix: "$KV." + name + ".",
			kv: kv, recs: map[string]record{}, wake: make(chan struct{}, 1),
		})
	}
	// Notices first, so none is missed between the read and the polls.
	sub, err := nc.Subscribe(s.subject, s.onNotice)
	if err != nil {
		return nil, fmt.Errorf("control: revocation notices on %s: %w", s.subject, err)
	}
	s.notices = sub
	for _, b := range s.buckets {
		if err := s.readAll(ctx, b); err != nil {
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("control: reading grants bucket %q: %w", b.name, err)
		}
	}
	if len(s.buckets) > 1 {
		s.reconcile(ctx)
	}
	wctx, cancel := context.WithCancel(context.Background()) // the pollers live until Close
	s.cancel = cancel
	for _, b := range s.buckets {
		s.wg.Add(1)
		go s.poll(wctx, b)
	}
	if len(s.buckets) > 1 {
		s.wg.Add(1)
		go s.keepApart(wctx)
	}
	// Back from a lost connection, ask at once rather than at the next
	// turn: the store has not been confirmed since it was lost.
	status := nc.StatusChanged(nats.CONNECTED)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer nc.RemoveStatusListener(status)
		for {
			select {
			case <-wctx.Done():
				return
			case <-status:
				for _, b := range s.buckets {
					select {
					case b.wake <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	for s.Ready() != nil {
		select {
		case <-ctx.Done():
			s.Close()
			return nil, fmt.Errorf("control: reading grants bucket %q: %w", o.Bucket, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return s, nil
}

// openBucket creates or updates a grants bucket, trying again while the
// request goes unanswered (the cluster electing, a leader moving) until
// ctx ends or the server refuses it for want of permission.
func openBucket(ctx context.Context, js jetstream.JetStream, name string, replicas int) (jetstream.KeyValue, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout*2)
		kv, err := js.CreateOrUpdateKeyValue(actx, jetstream.KeyValueConfig{
			Bucket:      name,
			Description: "airlock task grants and requests",
			History:     16,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		})
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) || natsconn.Denied(js.Conn(), "KV_"+name) {
			return kv, err
		}
	}
}

// Close stops following the buckets.
func (s *Store) Close() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.notices != nil {
		_ = s.notices.Unsubscribe()
	}
}

// readAll reads every revision b holds, through a watcher, and leaves b.rev
// at the newest so the poller goes on from there.
func (s *Store) readAll(ctx context.Context, b *bucket) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := b.kv.WatchAll(wctx, jetstream.IncludeHistory())
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil { // every revision there was at the start
				return nil
			}
			var g *authz.Grant
			if e.Operation() == jetstream.KeyValuePut {
				g = new(authz.Grant)
				if err := json.Unmarshal(e.Value(), g); err != nil {
					s.log.Error("grant record unreadable", "bucket", b.name, "key", e.Key(), "err", err)
					b.rev = max(b.rev, e.Revision())
					continue
				}
			}
			s.apply(b, e.Key(), g, e.Revision())
			b.rev = max(b.rev, e.Revision())
		}
	}
}

// rank orders a grant's states as its life goes (pending, then active,
// then denied or revoked), so that of two copies the one further on wins.
// A deleted record ends the grant. An unknown state counts as final: it
// does not make a grant usable.
func rank(g *authz.Grant) int {
	if g == nil {
		return rankFinal + 1
	}
	switch g.State {
	case authz.StatePending:
		return 1
	case authz.StateActive:
		return 2
	}
	return rankFinal
}

// rankFinal is the rank of a denied or revoked grant.
const rankFinal = 3

// apply records what bucket b holds for key at rev and tells the
// subscribers if the merged view changed. A copy that is not further on
// than the one b already gave (a write that lost a race, arriving late)
// changes nothing.
func (s *Store) apply(b *bucket, key string, g *authz.Grant, rev uint64) {
	s.mu.Lock()
	old, ok := b.recs[key]
	if ok && (rank(g) < rank(old.g) || rank(g) == rank(old.g) && rev <= old.rev) {
		s.mu.Unlock()
		return
	}
	b.recs[key] = record{g, rev}
	changed := s.mergeLocked(key)
	fns := s.watchFn
	s.mu.Unlock()
	if changed != nil {
		for _, fn := range fns {
			fn(changed)
		}
	}
}

// mergeLocked recomputes what lookups see of grant id: the furthest copy
// any bucket holds, revoked if a revocation notice says so. It returns the
// grant to tell subscribers about, nil when nothing changed.
func (s *Store) mergeLocked(id string) *authz.Grant {
	var best *authz.Grant
	found, bestRank := false, 0
	for _, b := range s.buckets {
		r, ok := b.recs[id]
		if !ok {
			continue
		}
		if k := rank(r.g); !found || k > bestRank {
			best, bestRank, found = r.g, k, true
		}
	}
	if n, ok := s.revoking[id]; ok {
		switch {
		case found && bestRank >= rankFinal:
			delete(s.revoking, id) // stored; the notice has done its work
		case best != nil:
			c := *best
			c.State, c.RevokedBy, c.RevokedAt = authz.StateRevoked, n.By, n.At
			best = &c
		}
	}
	cur := s.grants[id]
	switch {
	case best == nil && cur == nil:
		return nil
	case best == nil:
		// The key was deleted from the buckets: the grant is gone, and
		// its sessions end.
		delete(s.grants, id)
		c := *cur
		c.State, c.RevokedBy, c.RevokedAt = authz.StateRevoked, "the grants bucket (record deleted)", time.Now().UTC()
		return &c
	case best == cur:
		return nil
	}
	s.grants[id] = best
	return best
}

// OnChange registers fn to be called with every changed grant. fn must not
// block.
func (s *Store) OnChange(fn func(*authz.Grant)) {
	s.mu.Lock()
	s.watchFn = append(s.watchFn, fn)
	s.mu.Unlock()
}

// confirm records that a request sent at sent found the store current.
func (s *Store) confirm(sent time.Time) {
	at := int64(sent.Sub(s.t0))
	for {
		cur := s.confirmed.Load()
		if at <= cur || s.confirmed.CompareAndSwap(cur, at) {
			return
		}
	}
}

// Ready returns ErrNotSynced unless a bucket's leader confirmed within
// ConfirmWithin that the store holds every change.
func (s *Store) Ready() error {
	c := s.confirmed.Load()
	if c == 0 || time.Since(s.t0)-time.Duration(c) > ConfirmWithin {
		return ErrNotSynced
	}
	return nil
}

// Get returns the grant with id from the cache.
func (s *Store) Get(id string) (*authz.Grant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g, ok := s.grants[id]
	if !ok {
		return nil, ErrNoGrant
	}
	return g, nil
}

// List returns the grants that keep returns true for, newest first.
func (s *Store) List(keep func(*authz.Grant) bool) []*authz.Grant {
	s.mu.RLock()
	out := make([]*authz.Grant, 0, len(s.grants))
	for _, g := range s.grants {
		if keep == nil || keep(g) {
			out = append(out, g)
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].RequestedAt.Equal(out[j].RequestedAt) {
			return out[i].RequestedAt.After(out[j].RequestedAt)
		}
		return out[i].ID > out[j].ID
	})
	return out
}

// ForAgent returns every grant of agent, whatever its state. It fails
// closed with ErrNotSynced when the cache may be stale.
func (s *Store) ForAgent(agent string) ([]*authz.Grant, error) {
	if err := s.Ready(); err != nil {
		return nil, err
	}
	return s.List(func(g *authz.Grant) bool { return g.Agent == agent }), nil
}

// Create stores a new grant in every bucket.
func (s *Store) Create(ctx context.Context, g *authz.Grant) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	ctx, cancel := withWriteTimeout(ctx)
	defer cancel()
	for i, bk := range s.buckets {
		rev, err := retryWrite(ctx, func(ctx context.Context) (uint64, error) {
			rev, err := bk.kv.Create(ctx, g.ID, b)
			if errors.Is(err, jetstream.ErrKeyExists) {
				// An earlier attempt whose answer was lost stored it.
				if e, gerr := bk.kv.Get(ctx, g.ID); gerr == nil && bytes.Equal(e.Value(), b) {
					return e.Revision(), nil
				}
			}
			return rev, err
		})
		if err != nil {
			if i == 0 {
				return fmt.Errorf("control: storing grant %s: %w", g.ID, err)
			}
			return fmt.Errorf("control: storing grant %s in the standby bucket %s (it is in %s): %w", g.ID, bk.name, s.buckets[0].name, err)
		}
		s.apply(bk, g.ID, g, rev)
	}
	s.announce(g, false)
	return nil
}

// Update changes a grant with fn under optimistic concurrency: if another
// writer got there first, fn runs again on the newer value. The change is
// made in the grants bucket, then in the standby; it is acknowledged once
// both hold it. A revocation is announced to every replica before it is
// stored, and again after, so live sessions end at once even while a
// bucket elects a leader.
func (s *Store) Update(ctx context.Context, id string, fn func(*authz.Grant) error) (*authz.Grant, error) {
	ctx, cancel := withWriteTimeout(ctx)
	defer cancel()
	primary := s.buckets[0]
	// Revoke on every replica at once, from this replica's copy, before
	// any round trip to a bucket (which may be electing a leader). A
	// notice only ever revokes, so acting on a stale copy is safe: the
	// grant is in that state or further on.
	announced := false
	s.mu.RLock()
	cur, base := s.grants[id], primary.recs[id]
	s.mu.RUnlock()
	if cur != nil && cur.State != authz.StateRevoked {
		c := *cur
		if fn(&c) == nil && c.State == authz.StateRevoked {
			s.announce(&c, true)
			announced = true
		}
	}
	// sent holds the values written with an unknown outcome (no answer):
	// one may be stored, and be what the next read finds.
	var sent [][]byte
	var (
		early      <-chan error // a revocation's early write to the standby
		earlyValue []byte
	)
	finish := func(g *authz.Grant, b []byte, rev uint64) (*authz.Grant, error) {
		if early != nil && bytes.Equal(b, earlyValue) {
			s.apply(primary, g.ID, g, rev)
			if err := <-early; err != nil {
				return nil, fmt.Errorf("control: grant %s changed in %s but not yet in the standby bucket (try again): %w", g.ID, primary.name, err)
			}
			s.announce(g, true)
			return g, nil
		}
		return s.finishUpdate(ctx, g, b, rev)
	}
	for attempt := 0; attempt < 5; {
		var g authz.Grant
		var rev uint64
		if base.g != nil {
			// First from the copy in memory, which is current unless a
			// change is on its way: then the write fails on its revision
			// and the next attempt reads.
			g, rev = *base.g, base.rev
			base = record{}
		} else {
			var e jetstream.KeyValueEntry
			_, err := retryWrite(ctx, func(ctx context.Context) (uint64, error) {
				var err error
				e, err = primary.kv.Get(ctx, id)
				return 0, err
			})
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return nil, ErrNoGrant
			}
			if err != nil {
				return nil, fmt.Errorf("control: reading grant %s: %w", id, err)
			}
			for _, v := range sent {
				if bytes.Equal(e.Value(), v) {
					// Our write whose answer was lost was stored after all.
					if err := json.Unmarshal(v, &g); err != nil {
						return nil, err
					}
					return finish(&g, v, e.Revision())
				}
			}
			if err := json.Unmarshal(e.Value(), &g); err != nil {
				return nil, fmt.Errorf("control: grant %s unreadable: %w", id, err)
			}
			rev = e.Revision()
		}
		wasRevoked := g.State == authz.StateRevoked
		if err := fn(&g); err != nil {
			return nil, err
		}
		b, err := json.Marshal(&g)
		if err != nil {
			return nil, err
		}
		if g.State == authz.StateRevoked && !wasRevoked {
			if !announced {
				s.announce(&g, true)
				announced = true
			}
			if early == nil {
				// The standby too, now rather than after the grants
				// bucket, which may be electing a leader: replicas that
				// missed the notice find it there. Safe even if this
				// write then loses a race in the grants bucket: revoked
				// is as far as a grant goes, and an active grant is all
				// a revocation is made from.
				early, earlyValue = s.storeStandbys(ctx, &g, b), b
				// A replica reconciling the buckets may copy it into the
				// grants bucket before this write gets there.
				sent = append(sent, b)
			}
		}
		actx, acancel := context.WithTimeout(ctx, attemptTimeout)
		rev, err = primary.kv.Update(actx, id, b, rev)
		acancel()
		switch {
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			attempt++
			continue // lost the race (maybe to our own earlier write), or the copy was stale; read again
		case unavailable(err) && ctx.Err() == nil:
			// Read again to learn whether it was stored, once the bucket
			// may answer.
			sent = append(sent, b)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		case err != nil:
			return nil, fmt.Errorf("control: updating grant %s: %w", id, err)
		}
		return finish(&g, b, rev)
	}
	return nil, fmt.Errorf("control: grant %s is changing too often; try again", id)
}

// finishUpdate records g, stored in the grants bucket at rev, and stores it
// in the standby bucket.
func (s *Store) finishUpdate(ctx context.Context, g *authz.Grant, b []byte, rev uint64) (*authz.Grant, error) {
	s.apply(s.buckets[0], g.ID, g, rev)
	for _, bk := range s.buckets[1:] {
		rev, err := retryWrite(ctx, func(ctx context.Context) (uint64, error) { return bk.kv.Put(ctx, g.ID, b) })
		if err != nil {
			return nil, fmt.Errorf("control: grant %s changed in %s but not yet in the standby bucket %s (try again): %w", g.ID, s.buckets[0].name, bk.name, err)
		}
		s.apply(bk, g.ID, g, rev)
	}
	// A revocation again, for replicas that were reconnecting when the
	// first notice went out.
	s.announce(g, g.State == authz.StateRevoked)
	return g, nil
}

// storeStandbys writes g, encoded as b, to the standby buckets, in the
// background; the channel delivers the outcome.
func (s *Store) storeStandbys(ctx context.Context, g *authz.Grant, b []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		for _, bk := range s.buckets[1:] {
			rev, err := retryWrite(ctx, func(ctx context.Context) (uint64, error) { return bk.kv.Put(ctx, g.ID, b) })
			if err != nil {
				done <- err
				return
			}
			s.apply(bk, g.ID, g, rev)
		}
		done <- nil
	}()
	return done
}

// withWriteTimeout gives ctx a deadline if it has none.
func withWriteTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, writeTimeout)
}

// retryWrite runs op with attemptTimeout per attempt until it succeeds,
// fails for a reason other than the bucket being unreachable or without a
// leader, or ctx ends.
func retryWrite(ctx context.Context, op func(context.Context) (uint64, error)) (uint64, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		rev, err := op(actx)
		cancel()
		if err == nil || !unavailable(err) || ctx.Err() != nil {
			return rev, err
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// unavailable reports whether err says the bucket could not be reached or
// has no leader now, rather than refusing the request.
func unavailable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 // "JetStream system temporarily unavailable", no leader
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected)
}
