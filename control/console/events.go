package console

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/airlockhq/airlock/authz"
	"github.com/airlockhq/airlock/config"
	"github.com/airlockhq/airlock/control"
)

// hub tells open pages that grants changed. It is fed by the grant
// store's change notifications, which fire for changes made on any
// replica (the store follows the bucket), and by a timer at each active
// grant's expiry and each pending request's deadline, which are no change
// in the bucket.
//
// An event carries no grant data, only its name: each page fetches what
// its identity may see with a normal, role-checked request.
type hub struct {
	now func() time.Time

	mu     sync.Mutex
	subs   map[chan struct{}]struct{}
	timers map[string]*time.Timer
	closed bool
	done   chan struct{}
}

func newHub(store *control.Store, now func() time.Time) *hub {
	h := &hub{now: now, subs: map[chan struct{}]struct{}{}, timers: map[string]*time.Timer{}, done: make(chan struct{})}
	if store == nil {
		return h
	}
	store.OnChange(h.changed)
	for _, g := range store.List(nil) {
		h.watchExpiry(g)
	}
	return h
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

// broadcast wakes every stream; a stream already woken stays woken once
// (changes coalesce, the page fetches the latest anyway).
func (h *hub) broadcast() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (h *hub) subscribe() (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
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
	for _, t := range h.timers {
		t.Stop()
	}
	close(h.done)
}

// pingEvery keeps idle streams alive through proxies.
const pingEvery = 25 * time.Second

// serveEvents is the Server-Sent Events stream of /ui/events: an event
// "grants" whenever a grant changes or expires. It ends when the console
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
	ch, unsubscribe := c.events.subscribe()
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
		case <-ch:
			_, err = fmt.Fprint(w, "event: grants\ndata: changed\n\n")
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
