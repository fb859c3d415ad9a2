package control

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/airlockhq/airlock/internal/plural"
)

// Startup answers on the HTTP listener while the gateway is still starting
// (waiting for NATS: the connection, a JetStream leader, the stream, the
// buckets), so that health checks and the CLI learn what it waits for
// instead of finding nothing listening. GET /healthz answers 503 with a
// StartupStatus; every other request 503 with the same reason. Once Ready
// hands it the API's handler it passes every request through.
type Startup struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	begun   time.Time
	status  StartupStatus
	handler http.Handler
}

// StartupStatus is the body of /healthz while the gateway starts.
type StartupStatus struct {
	// Status is "starting".
	Status string `json:"status"`
	// WaitingFor names what the gateway waits for, e.g. "JetStream stream
	// AIRLOCK_EVENTS".
	WaitingFor string `json:"waiting_for"`
	// Since is when it began waiting for it; Started when the start began.
	Since   time.Time `json:"since"`
	Started time.Time `json:"started"`
	// Attempts made so far, and the last one's error.
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error,omitempty"`
	// Error is all of it in one sentence, as every error answer carries.
	Error string `json:"error"`
}

func (s *Startup) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Waiting says the gateway now waits for what.
func (s *Startup) Waiting(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().UTC()
	if s.begun.IsZero() {
		s.begun = now
	}
	s.status = StartupStatus{Status: "starting", WaitingFor: what, Since: now, Started: s.begun}
}

// Failed records that attempt n at the current wait failed with err.
func (s *Startup) Failed(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Attempts = n
	s.status.LastError = err.Error()
}

// Ready makes the gateway serve h from now on.
func (s *Startup) Ready(h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

// Status is what /healthz says while starting; ok is false once ready.
func (s *Startup) Status() (st StartupStatus, starting bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handler != nil {
		return StartupStatus{}, false
	}
	st = s.status
	if st.Status == "" {
		st.Status, st.WaitingFor = "starting", "the gateway's own set-up"
	}
	st.Error = fmt.Sprintf("gateway starting: waiting for %s", st.WaitingFor)
	if !st.Since.IsZero() {
		st.Error += fmt.Sprintf(" for %s", s.now().Sub(st.Since).Round(100*time.Millisecond))
	}
	if st.Attempts > 0 {
		st.Error += fmt.Sprintf(" (%s; last: %s)", plural.N(st.Attempts, "attempt"), st.LastError)
	}
	return st, true
}

// ServeHTTP passes r to the API once ready and answers 503 before.
func (s *Startup) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.handler
	s.mu.Unlock()
	if h != nil {
		h.ServeHTTP(w, r)
		return
	}
	st, starting := s.Status()
	if !starting { // became ready meanwhile
		s.ServeHTTP(w, r)
		return
	}
	// A client may retry; a health check should not cache the answer.
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Path == "/healthz" {
		writeJSON(w, http.StatusServiceUnavailable, st)
		return
	}
	writeError(w, http.StatusServiceUnavailable, st.Error)
}
