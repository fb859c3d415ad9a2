package console

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control"
)

// hub tells open pages that grants or holds changed. It is fed by the
// grant store's change notifications, which fire for changes made on any
// replica (the store follows the bucket), by the hold store's (Follow
// watches its bucket), and by a timer at each active grant's expiry, each
// pending request's deadline and each pending hold's, which are no change
// in a bucket.
//
// An event carries no grant or hold data, only its name: each page fetches
// what its identity may see with a normal, role-checked request. Only an
// approver's or admin's stream hears of holds.
type hub struct {
	now func() time.Time

	mu     sync.Mutex
	subs   map[*sub]struct{}
	timers map[string]*time.Timer
	// pending are the pending holds by id, with their deadlines: the
	// count in the navigation, without reading the bucket per page.
	pending map[string]time.Time
	closed  bool
	done    chan struct{}
	stop    context.CancelFunc
}

// sub is one open event stream; holds is nil for a role that may not see
// holds.
type sub struct {
	grants, holds chan struct{}
}

func newHub(store *control.Store, holds *control.HoldStore, now func() time.Time) *hub {
	h := &hub{now: now, subs: map[*sub]struct{}{}, timers: map[string]*time.Timer{}, pending: map[string]time.Time{},
		done: make(chan struct{}), stop: func() {}}
	if store != nil {
		store.OnChange(h.changed)
		for _, g := range store.List(nil) {
			h.watchExpiry(g)
		}
	}
	if holds != nil {
		// The console lives as long as the gateway; close stops this.
		ctx, cancel := context.WithCancel(context.Background())
		h.stop = cancel
		go holds.Follow(ctx, h.holdChanged)
	}
	return h
}

// holdChanged is the hold store's Follow callback; it must not block.
func (h *hub) holdChanged(hd *authz.Hold) {
	h.mu.Lock()
	key := "hold:" + hd.ID
	if t := h.timers[key]; t != nil {
		t.Stop()
		delete(h.timers, key)
	}
	delete(h.pending, hd.ID)
	if left := hd.ExpiresAt.Sub(h.now()); hd.State == authz.HoldPending && left > 0 && !h.closed {
		h.pending[hd.ID] = hd.ExpiresAt
		// A hold whose session died with its gateway is never marked
		// expired; its deadline still takes it off the pages.
		id := hd.ID
		h.timers[key] = time.AfterFunc(left, func() {
			h.mu.Lock()
			delete(h.timers, key)
			delete(h.pending, id)
			h.mu.Unlock()
			h.broadcastHolds()
		})
	}
	h.mu.Unlock()
	h.broadcastHolds()
}

// pendingHolds is how many holds wait for a decision.
func (h *hub) pendingHolds() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n, now := 0, h.now()
	for _, at := range h.pending {
		if now.Before(at) {
			n++
		}
	}
	return n
}

// changed is the store's OnChange callback; it must not block.
func (h *hub) changed(g *authz.Grant) {
	h.watchExpiry(g)
	h.broadcast()
}

// watchExpiry arms a timer that announces an active grant's expiry, or a
// pending request's (it then leaves the queue).
func (h *hub) watchExpiry(g *authz.Grant) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	if t := h.timers[g.ID]; t != nil {
		t.Stop()
		delete(h.timers, g.ID)
	}
	at := g.ExpiredAt()
	if (g.State != authz.StateActive && g.State != authz.StatePending) || at.IsZero() {
		return
	}
	left := at.Sub(h.now())
	if left <= 0 {
		return
	}
	id := g.ID
	h.timers[id] = time.AfterFunc(left, func() {
		h.mu.Lock()
		delete(h.timers, id)
		h.mu.Unlock()
		h.broadcast()
	})
}

// broadcast wakes every stream's grants event; a stream already woken
// stays woken once (changes coalesce, the page fetches the latest anyway).
func (h *hub) broadcast() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		wake(s.grants)
	}
}

// broadcastHolds wakes the holds event of the streams that may see holds.
func (h *hub) broadcastHolds() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		wake(s.holds)
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// subscribe opens a stream's channels; holds only for an approver or
// admin (a nil channel is never ready).
func (h *hub) subscribe(who *config.Identity) (*sub, func()) {
	s := &sub{grants: make(chan struct{}, 1)}
	if slices.Contains(approvers, who.Role) {
		s.holds = make(chan struct{}, 1)
	}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s, func() {
		h.mu.Lock()
		delete(h.subs, s)
		h.mu.Unlock()
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	h.stop()
	for _, t := range h.timers {
		t.Stop()
	}
	close(h.done)
}

// pingEvery keeps idle streams alive through proxies.
const pingEvery = 25 * time.Second

// serveEvents is the Server-Sent Events stream of /ui/events: an event
// "grants" whenever a grant changes or expires, and for an approver or
// admin an event "holds" whenever a hold is created, decided or expires.
// It ends when the console
// session does (checked at each ping) or the gateway stops.
func (c *Console) serveEvents(w http.ResponseWriter, r *http.Request, who *config.Identity) {
	rc := http.NewResponseController(w)
	// A stream lives longer than any write timeout the server may have.
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s, unsubscribe := c.events.subscribe(who)
	defer unsubscribe()
	// retry: how long the browser waits before reconnecting.
	if _, err := fmt.Fprint(w, "retry: 2000\n: connected\n\n"); err != nil {
		return
	}
	_ = rc.Flush()
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case <-c.events.done:
			return
		case <-s.grants:
			_, err = fmt.Fprint(w, "event: grants\ndata: changed\n\n")
		case <-s.holds:
			_, err = fmt.Fprint(w, "event: holds\ndata: changed\n\n")
		case <-ping.C:
			if who, lerr := c.identify(r); lerr == nil && who == nil {
				return
			}
			_, err = fmt.Fprint(w, ": ping\n\n")
		}
		if err != nil || rc.Flush() != nil {
			return
		}
	}
}
