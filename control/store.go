// Package control is the gateway's control plane: grants and requests kept
// in a JetStream key-value bucket, watched so every gateway replica sees a
// change at once, and the HTTP API that agents, approvers and reviewers use.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/airlockhq/airlock/authz"
)

// ErrNotSynced is returned while the store cannot confirm it holds every
// grant change: at start, and after losing its NATS server until it has
// read the bucket again. The gateway refuses sessions meanwhile, so a
// revocation made during the outage is never missed.
var ErrNotSynced = errors.New("grant store not synchronized with NATS")

// ErrNoGrant is returned for an unknown grant id.
var ErrNoGrant = errors.New("no such grant")

// Store keeps grants in a key-value bucket and a synchronized copy in
// memory, so lookups on the connection path never touch the network.
type Store struct {
	kv  jetstream.KeyValue
	nc  *nats.Conn
	log *slog.Logger

	mu     sync.RWMutex
	grants map[string]*authz.Grant
	revs   map[string]uint64
	synced bool
	// epoch is the connection's reconnect count when the cache was last
	// synchronized. Any reconnect since may have hidden changes, so the
	// cache counts as current only while the count is unchanged.
	epoch   uint64
	watchFn []func(*authz.Grant)

	cancel context.CancelFunc
	done   chan struct{}
}

// StoreOptions configures OpenStore.
type StoreOptions struct {
	Bucket   string
	Replicas int
	Logger   *slog.Logger
}

// OpenStore creates the bucket if needed, reads it, and keeps watching it
// until Close.
func OpenStore(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, o StoreOptions) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      o.Bucket,
		Description: "airlock task grants and requests",
		History:     16,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("control: grants bucket %q: %w", o.Bucket, err)
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.Default()
	}
	wctx, cancel := context.WithCancel(context.Background()) // the watcher lives until Close
	s := &Store{
		kv: kv, nc: nc, log: logger,
		grants: map[string]*authz.Grant{}, revs: map[string]uint64{},
		cancel: cancel, done: make(chan struct{}),
	}
	synced := make(chan struct{})
	go s.watch(wctx, synced)
	select {
	case <-synced:
		return s, nil
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("control: reading grants bucket: %w", ctx.Err())
	}
}

// Close stops the watcher.
func (s *Store) Close() {
	s.cancel()
	<-s.done
}

// watch follows the bucket. A watcher is restarted whenever the connection
// drops, and the store reports itself unsynchronized from the drop until the
// new watcher has delivered every current value.
func (s *Store) watch(ctx context.Context, firstSync chan struct{}) {
	defer close(s.done)
	var once sync.Once
	for ctx.Err() == nil {
		err := s.watchOnce(ctx, func() { once.Do(func() { close(firstSync) }) })
		s.setSynced(false)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("grant watcher restarting", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (s *Store) watchOnce(ctx context.Context, onSync func()) error {
	if !s.nc.IsConnected() {
		return errors.New("not connected")
	}
	epoch := s.nc.Stats().Reconnects
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.kv.WatchAll(wctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	// A fresh watcher replays the bucket; grants it does not mention
	// (purged keys) must not survive from before.
	seen := map[string]bool{}
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-check.C:
			if !s.nc.IsConnected() || s.nc.Stats().Reconnects != epoch {
				return errors.New("connection lost")
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil { // end of the initial values
				s.mu.Lock()
				for id := range s.grants {
					if !seen[id] {
						delete(s.grants, id)
						delete(s.revs, id)
					}
				}
				s.synced, s.epoch = true, epoch
				s.mu.Unlock()
				onSync()
				continue
			}
			seen[e.Key()] = true
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var g authz.Grant
			if err := json.Unmarshal(e.Value(), &g); err != nil {
				s.log.Error("grant record unreadable", "key", e.Key(), "err", err)
				continue
			}
			s.apply(&g, e.Revision())
		}
	}
}

func (s *Store) setSynced(v bool) {
	s.mu.Lock()
	s.synced = v
	s.mu.Unlock()
}

// apply puts g in the cache unless a newer revision is there, and tells the
// subscribers.
func (s *Store) apply(g *authz.Grant, rev uint64) {
	s.mu.Lock()
	if rev <= s.revs[g.ID] {
		s.mu.Unlock()
		return
	}
	s.grants[g.ID] = g
	s.revs[g.ID] = rev
	fns := s.watchFn
	s.mu.Unlock()
	for _, fn := range fns {
		fn(g)
	}
}

// OnChange registers fn to be called with every changed grant. fn must not
// block.
func (s *Store) OnChange(fn func(*authz.Grant)) {
	s.mu.Lock()
	s.watchFn = append(s.watchFn, fn)
	s.mu.Unlock()
}

// Ready returns ErrNotSynced unless the cache is known to be current.
func (s *Store) Ready() error {
	s.mu.RLock()
	ok, epoch := s.synced, s.epoch
	s.mu.RUnlock()
	if !ok || !s.nc.IsConnected() || s.nc.Stats().Reconnects != epoch {
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

// Create stores a new grant.
func (s *Store) Create(ctx context.Context, g *authz.Grant) error {
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	rev, err := s.kv.Create(ctx, g.ID, b)
	if err != nil {
		return fmt.Errorf("control: storing grant %s: %w", g.ID, err)
	}
	s.apply(g, rev)
	return nil
}

// Update changes a grant with fn under optimistic concurrency: if another
// writer got there first, fn runs again on the newer value.
func (s *Store) Update(ctx context.Context, id string, fn func(*authz.Grant) error) (*authz.Grant, error) {
	for attempt := 0; attempt < 5; attempt++ {
		e, err := s.kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, ErrNoGrant
		}
		if err != nil {
			return nil, fmt.Errorf("control: reading grant %s: %w", id, err)
		}
		var g authz.Grant
		if err := json.Unmarshal(e.Value(), &g); err != nil {
			return nil, fmt.Errorf("control: grant %s unreadable: %w", id, err)
		}
		if err := fn(&g); err != nil {
			return nil, err
		}
		b, err := json.Marshal(&g)
		if err != nil {
			return nil, err
		}
		rev, err := s.kv.Update(ctx, id, b, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // lost the race; read again
		}
		if err != nil {
			return nil, fmt.Errorf("control: updating grant %s: %w", id, err)
		}
		s.apply(&g, rev)
		return &g, nil
	}
	return nil, fmt.Errorf("control: grant %s is changing too often; try again", id)
}
