package control

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestStartup(t *testing.T) {
	s := &Startup{}
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	s.Waiting("JetStream stream AIRLOCK_EVENTS")
	s.Failed(2, errors.New("context deadline exceeded"))
	code, body := get("/healthz")
	var st StartupStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("healthz while starting: %d %s", code, body)
	}
	if st.Status != "starting" || st.WaitingFor != "JetStream stream AIRLOCK_EVENTS" || st.Attempts != 2 ||
		!strings.Contains(st.Error, "waiting for JetStream stream AIRLOCK_EVENTS") || !strings.Contains(st.Error, "context deadline exceeded") {
		t.Fatalf("healthz while starting: %+v", st)
	}
	// Every other route says the same, as an error the CLI prints.
	code, body = get("/v1/sessions")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "gateway starting: waiting for JetStream stream AIRLOCK_EVENTS") {
		t.Fatalf("API while starting: %d %s", code, body)
	}

	s.Ready(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	if code, _ := get("/healthz"); code != http.StatusTeapot {
		t.Fatalf("after Ready the API answers; got %d", code)
	}
	if _, starting := s.Status(); starting {
		t.Fatal("still starting after Ready")
	}
}
