package control

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/airlockhq/airlock/authz"
)

// MaxWait bounds the wait of GET /v1/grants/{id}?wait=D: a longer one is
// cut to it (proxies and load balancers end idle requests after a minute
// or so); the caller asks again.
const MaxWait = 60 * time.Second

// waiters wake the long polls of GET /v1/grants/{id}?wait= when their
// grant changes. They hear of changes from the store's OnChange, which
// fires for a change made on any replica, so an approval on one gateway
// answers a wait on another at once.
type waiters struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
	done chan struct{}
}

func (a *API) waiters() *waiters {
	a.waitOnce.Do(func() {
		a.wait = &waiters{subs: map[string]map[chan struct{}]struct{}{}, done: make(chan struct{})}
		a.Service.Store.OnChange(a.wait.changed)
	})
	return a.wait
}

// changed is the store's OnChange callback; it must not block.
func (w *waiters) changed(g *authz.Grant) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs[g.ID] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (w *waiters) subscribe(id string) (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.subs[id] == nil {
		w.subs[id] = map[chan struct{}]struct{}{}
	}
	w.subs[id][ch] = struct{}{}
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.subs[id], ch)
		if len(w.subs[id]) == 0 {
			delete(w.subs, id)
		}
		w.mu.Unlock()
	}
}

// Close ends every wait under way (they answer the grant as it is), so an
// HTTP server's graceful shutdown does not wait for them.
func (a *API) Close() {
	w := a.waiters()
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.done:
	default:
		close(w.done)
	}
}

// parseWait reads the wait parameter: a Go duration, cut to MaxWait.
func parseWait(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("wait %q: want a duration such as 30s (at most %s)", v, MaxWait)
	}
	return min(d, MaxWait), nil
}

// awaitDecision returns grant id once it is no longer pending (approved,
// denied, or its request expired), or as it is when d has passed, ctx
// ends or the API closes. visible says whether the caller may see it.
func (a *API) awaitDecision(ctx context.Context, id string, d time.Duration, visible func(*authz.Grant) bool) (*authz.Grant, error) {
	w := a.waiters()
	// Subscribed before the first look, so a change in between wakes us.
	ch, unsubscribe := w.subscribe(id)
	defer unsubscribe()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	var expiry <-chan time.Time
	for {
		g, err := a.Service.Store.Get(id)
		if err != nil || !visible(g) {
			return nil, ErrNoGrant
		}
		now := a.Service.now()
		if g.EffectiveState(now) != authz.StatePending {
			return g, nil
		}
		// A pending request expires with no change in the store: look
		// again just after its deadline.
		if expiry == nil && !g.RequestExpiresAt.IsZero() {
			t := time.NewTimer(max(g.RequestExpiresAt.Sub(now), 0) + 10*time.Millisecond)
			defer t.Stop()
			expiry = t.C
		}
		select {
		case <-ch:
		case <-expiry:
		case <-deadline.C:
			return g, nil
		case <-ctx.Done():
			return g, nil
		case <-w.done:
			return g, nil
		}
	}
}

func (a *API) getGrantWait(w http.ResponseWriter, r *http.Request, d time.Duration, visible func(*authz.Grant) bool) {
	g, err := a.awaitDecision(r.Context(), r.PathValue("id"), d, visible)
	if err != nil {
		writeError(w, http.StatusNotFound, "no grant "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, public(g, a.Service.now()))
}
