package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestMetricsExposed(t *testing.T) {
	m := New()
	m.SessionStarted("postgres")
	m.AuthFailed("postgres", "bad-token")
	m.Statements("postgres", 3, 1)
	m.Committed(80*time.Microsecond, nil)
	m.Committed(time.Second, errors.New("down"))
	m.GroupCommit(func() (uint64, uint64) { return 4, 10 })
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`airlock_sessions{proto="postgres"} 1`,
		`airlock_auth_failures_total{proto="postgres",reason="bad-token"} 1`,
		`airlock_statements_total{decision="allow",proto="postgres"} 3`,
		`airlock_statements_total{decision="deny",proto="postgres"} 1`,
		`airlock_recorder_commit_failures_total 1`,
		`airlock_recorder_commit_seconds_count 2`,
		`process_resident_memory_bytes`,
		`airlock_recorder_messages_total 4`,
		`airlock_recorder_events_published_total 10`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if resp, err := srv.Client().Get(srv.URL + "/debug/pprof/"); err != nil || resp.StatusCode != 200 {
		t.Errorf("pprof index: %v", err)
	}
}
